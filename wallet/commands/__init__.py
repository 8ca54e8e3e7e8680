"""The ``microcash-wallet`` commands, one module per topic (see ``wallet.cli``)."""
