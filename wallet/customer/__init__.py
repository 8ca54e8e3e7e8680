"""The customer's side: escrows, the ticket issuer and the ``escrow``/``ticket`` commands
(MicroCash, SPEC §3, §4). A further scheme's customer side (SPEC §15, §16) joins as
modules beside these."""
