"""``python -m node`` runs ``microcash-node``."""

from node.main import cli

cli(prog_name="microcash-node")
