"""The merchant's side: the SPEC §13 ticket service, its store, signature workers, the
auto-redeemer, its view of the chain and the ``merchant`` commands (MicroCash, SPEC §4.1,
§6, §7). A further scheme's merchant side (SPEC §15, §16) joins as modules beside these."""
