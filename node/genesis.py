"""Loading the ``--genesis`` file (SPEC §12.1); the format lives in ``consensus.genesis``."""

import json
from pathlib import Path

from consensus.genesis import params_from_genesis
from consensus.params import ChainParams


class GenesisError(ValueError):
    """A genesis file that cannot be used; the message says why."""


def load_genesis(path: Path, chain: str) -> ChainParams:
    """Parameters of ``chain`` with the genesis time and premine of the file ``path``.

    Raises ``GenesisError`` for unreadable JSON, a profile mismatch, or bad entries.
    """
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GenesisError(f"cannot read genesis file {path}: {exc}") from None
    try:
        return params_from_genesis(document, chain)
    except ValueError as exc:
        raise GenesisError(f"{path}: {exc}") from None
