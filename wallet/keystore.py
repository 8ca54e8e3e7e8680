"""Passphrase-encrypted Ed25519 keys, one JSON file per key.

Layout: `<wallet_dir>/keys/<name>.json` (directory mode 0700, files 0600). A key is a
32-byte Ed25519 seed (SPEC §0), sealed with `nacl.secret.SecretBox` under a key derived
from the passphrase by argon2id (libsodium's INTERACTIVE limits, random 16-byte salt).
The public key is kept in clear so keys can be listed without the passphrase.

File: {"version": 1, "name", "public_key": hex, "kdf": "argon2id", "opslimit",
"memlimit", "salt": hex, "box": hex (nonce || ciphertext), "empty_passphrase": bool}.

PyNaCl is imported by the functions that seal or open a key, not at module level: most
wallet commands only look up public keys, and start faster without it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from wallet.durable import fsync_dir, write_synced

log = logging.getLogger("wallet.keystore")

SEED_SIZE = 32  # bytes, an Ed25519 seed
FILE_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_FILE_BYTES = 64 * 1024  # a key file is ~500 bytes; larger ones are not ours


class KeystoreError(Exception):
    """A key is missing, already exists, has a bad name, a bad file, or a wrong passphrase."""


class Keystore:
    """The wallet's named keys under `<wallet_dir>/keys/`.

    Nothing is touched on disk until the first `create`.
    """

    def __init__(self, wallet_dir: Path) -> None:
        self.wallet_dir = Path(wallet_dir)
        self.keys_dir = self.wallet_dir / "keys"

    def create(
        self,
        name: str,
        passphrase: str,
        *,
        seed: bytes | None = None,
        allow_empty: bool = False,
    ) -> bytes:
        """Store a new key under `name`; return its 32-byte public key.

        seed: 32 bytes to import, or None for a fresh random one. An empty passphrase
        is refused unless `allow_empty` (devnets). Raises KeystoreError for a bad name,
        an existing name, a bad seed or an empty passphrase.
        """
        import nacl.pwhash.argon2id as argon2id
        import nacl.secret
        import nacl.signing
        import nacl.utils

        path = self._path(name)
        if passphrase == "" and not allow_empty:
            raise KeystoreError("refusing an empty passphrase (allow_empty=True to permit)")
        if seed is None:
            seed = nacl.utils.random(SEED_SIZE)
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_SIZE:
            raise KeystoreError(f"a seed is {SEED_SIZE} bytes")
        if path.exists():
            raise KeystoreError(f"key {name!r} already exists")
        public_key = bytes(nacl.signing.SigningKey(bytes(seed)).verify_key)
        salt = nacl.utils.random(argon2id.SALTBYTES)
        opslimit, memlimit = argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE
        box = nacl.secret.SecretBox(_derive_key(passphrase, salt, opslimit, memlimit))
        record = {
            "version": FILE_VERSION,
            "name": name,
            "public_key": public_key.hex(),
            "kdf": "argon2id",
            "opslimit": opslimit,
            "memlimit": memlimit,
            "salt": salt.hex(),
            "box": bytes(box.encrypt(bytes(seed))).hex(),
            "empty_passphrase": passphrase == "",
        }
        self._ensure_dir()
        _write_new_file(path, json.dumps(record, indent=1).encode() + b"\n")
        log.info("created key %r", name)
        return public_key

    def list(self) -> list[tuple[str, bytes]]:
        """All keys as (name, public key), sorted by name; unreadable files are skipped
        with a warning in the log."""
        if not self.keys_dir.is_dir():
            return []
        keys = []
        for path in sorted(self.keys_dir.glob("*.json")):
            name = path.stem
            if not _NAME.fullmatch(name):
                continue
            try:
                keys.append((name, _public_key(self._read(name))))
            except KeystoreError as exc:
                log.warning("skipping %s: %s", path, exc)
        return keys

    def has(self, name: str) -> bool:
        """Whether a key file exists for `name` (False for an invalid name)."""
        return bool(_NAME.fullmatch(name)) and self._path(name).exists()

    def public_key(self, name: str) -> bytes:
        """The 32-byte public key of `name`. Raises KeystoreError if absent or corrupt."""
        return _public_key(self._read(name))

    def is_encrypted_with_empty(self, name: str) -> bool:
        """Whether `name` was stored with an empty passphrase (a prompt can be skipped)."""
        return self._read(name).get("empty_passphrase") is True

    def load_seed(self, name: str, passphrase: str) -> bytes:
        """Decrypt and return the 32-byte seed of `name`.

        Raises KeystoreError("wrong passphrase for key 'x'") when decryption fails, and
        KeystoreError for a missing or corrupt file (including a seed that does not
        match the stored public key).
        """
        import nacl.exceptions
        import nacl.pwhash.argon2id as argon2id
        import nacl.secret
        import nacl.signing
        import nacl.utils

        record = self._read(name)
        public_key = _public_key(record)
        try:
            salt = bytes.fromhex(record["salt"])
            sealed = bytes.fromhex(record["box"])
            opslimit, memlimit = record["opslimit"], record["memlimit"]
        except (KeyError, TypeError, ValueError):
            raise KeystoreError(f"key file for {name!r} is corrupt") from None
        if record.get("kdf") != "argon2id" or len(salt) != argon2id.SALTBYTES:
            raise KeystoreError(f"key file for {name!r} has an unknown key derivation")
        if not _limits_ok(opslimit, memlimit):
            raise KeystoreError(f"key file for {name!r} has out-of-range argon2id limits")
        box = nacl.secret.SecretBox(_derive_key(passphrase, salt, opslimit, memlimit))
        try:
            seed = box.decrypt(sealed)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise KeystoreError(f"wrong passphrase for key {name!r}") from None
        if len(seed) != SEED_SIZE or bytes(nacl.signing.SigningKey(seed).verify_key) != public_key:
            raise KeystoreError(f"key file for {name!r} is corrupt: seed does not match")
        return seed

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise KeystoreError(
                f"bad key name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ -"
            )
        return self.keys_dir / f"{name}.json"

    def _read(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise KeystoreError(f"no key named {name!r} in {self.keys_dir}") from None
        except OSError as exc:
            raise KeystoreError(f"cannot read {path}: {exc}") from None
        if len(data) > _MAX_FILE_BYTES:
            raise KeystoreError(f"{path} is too large to be a key file")
        try:
            record = json.loads(data)
        except (ValueError, RecursionError):
            raise KeystoreError(f"{path} is not a key file (bad JSON)") from None
        if not isinstance(record, dict) or record.get("version") != FILE_VERSION:
            raise KeystoreError(f"{path} is not a version {FILE_VERSION} key file")
        return record

    def _ensure_dir(self) -> None:
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)


def _derive_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """argon2id(passphrase) -> 32-byte SecretBox key; the passphrase is NFC-normalized."""
    import nacl.pwhash.argon2id as argon2id
    import nacl.secret

    secret = unicodedata.normalize("NFC", passphrase).encode()
    return argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, secret, salt,
                        opslimit=opslimit, memlimit=memlimit)


def _limits_ok(opslimit: Any, memlimit: Any) -> bool:
    """Bounds that keep a tampered file from demanding absurd time or memory."""
    import nacl.pwhash.argon2id as argon2id

    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (opslimit, memlimit))
    return ints and (
        argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_SENSITIVE
        and argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_SENSITIVE
    )


def _public_key(record: dict[str, Any]) -> bytes:
    try:
        key = bytes.fromhex(record["public_key"])
    except (KeyError, TypeError, ValueError):
        raise KeystoreError("key file has no valid public_key") from None
    if len(key) != SEED_SIZE:
        raise KeystoreError("key file public_key is not 32 bytes")
    return key


def _write_new_file(path: Path, data: bytes) -> None:
    """Atomically create `path` (mode 0600) holding `data`; never replaces a file.

    Written to a temporary file, fsynced, then hard-linked into place (which fails if
    the name was taken meanwhile) and the directory fsynced.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_synced(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise KeystoreError(f"key {path.stem!r} already exists") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
