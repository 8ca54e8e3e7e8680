"""Passphrase-encrypted key files (wallet/keystore.py)."""

import json
import os
import stat

import nacl.signing
import pytest

from wallet.keystore import Keystore, KeystoreError

SEED = bytes(range(32))
PUB = bytes(nacl.signing.SigningKey(SEED).verify_key)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_load_round_trip(tmp_path):
    ks = Keystore(tmp_path / "wallet")
    assert ks.list() == []
    assert ks.create("alice", "correct horse", seed=SEED) == PUB
    assert ks.has("alice") and not ks.has("bob")
    assert ks.public_key("alice") == PUB
    assert ks.load_seed("alice", "correct horse") == SEED
    assert not ks.is_encrypted_with_empty("alice")
    assert mode(ks.keys_dir) == 0o700
    assert mode(ks.keys_dir / "alice.json") == 0o600
    assert [p.name for p in ks.keys_dir.iterdir()] == ["alice.json"]  # no temp file left


def test_file_format_keeps_seed_secret(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("alice", "pw", seed=SEED)
    text = (ks.keys_dir / "alice.json").read_text()
    record = json.loads(text)
    assert SEED.hex() not in text
    assert record["version"] == 1 and record["name"] == "alice"
    assert record["public_key"] == PUB.hex() and record["kdf"] == "argon2id"
    assert len(bytes.fromhex(record["salt"])) == 16
    assert len(bytes.fromhex(record["box"])) == 24 + 16 + 32
    assert record["empty_passphrase"] is False
    assert {"opslimit", "memlimit"} <= record.keys()


def test_random_seed_and_list(tmp_path):
    ks = Keystore(tmp_path)
    pub_b = ks.create("b", "pw")
    pub_a = ks.create("a-1_X", "pw2")
    assert pub_a != pub_b
    assert ks.list() == [("a-1_X", pub_a), ("b", pub_b)]
    seed = ks.load_seed("b", "pw")
    assert bytes(nacl.signing.SigningKey(seed).verify_key) == pub_b


def test_empty_passphrase_only_when_allowed(tmp_path):
    ks = Keystore(tmp_path)
    with pytest.raises(KeystoreError, match="empty passphrase"):
        ks.create("dev", "")
    assert not ks.has("dev")
    ks.create("dev", "", seed=SEED, allow_empty=True)
    assert ks.is_encrypted_with_empty("dev")
    assert ks.load_seed("dev", "") == SEED


def test_unicode_passphrase_normalized(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("u", "caf\u00e9", seed=SEED)  # precomposed é
    assert ks.load_seed("u", "cafe\u0301") == SEED  # e + combining accent


def test_invalid_wrong_passphrase(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("alice", "right", seed=SEED)
    with pytest.raises(KeystoreError, match="wrong passphrase for key 'alice'"):
        ks.load_seed("alice", "wrong")


def test_invalid_existing_name(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("alice", "pw", seed=SEED)
    with pytest.raises(KeystoreError, match="already exists"):
        ks.create("alice", "other")
    assert ks.load_seed("alice", "pw") == SEED


@pytest.mark.parametrize("name", ["", "a" * 65, "../x", "a b", "a.json", "é", "a/b"])
def test_invalid_names(tmp_path, name):
    ks = Keystore(tmp_path)
    with pytest.raises(KeystoreError, match="bad key name"):
        ks.create(name, "pw")
    with pytest.raises(KeystoreError, match="bad key name"):
        ks.public_key(name)
    assert not ks.has(name)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)])
def test_invalid_seed_size(tmp_path, seed):
    with pytest.raises(KeystoreError, match="32 bytes"):
        Keystore(tmp_path).create("k", "pw", seed=seed)


def test_invalid_missing_key(tmp_path):
    ks = Keystore(tmp_path)
    with pytest.raises(KeystoreError, match="no key named 'ghost'"):
        ks.load_seed("ghost", "pw")
    with pytest.raises(KeystoreError, match="no key named"):
        ks.public_key("ghost")


def _tamper(ks, name, **changes):
    path = ks.keys_dir / f"{name}.json"
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def test_invalid_tampered_files(tmp_path):
    ks = Keystore(tmp_path)
    ks.create("a", "pw", seed=SEED)
    ks.create("b", "pw", seed=bytes(32))
    _tamper(ks, "a", public_key=bytes(nacl.signing.SigningKey(bytes(32)).verify_key).hex())
    with pytest.raises(KeystoreError, match="seed does not match"):
        ks.load_seed("a", "pw")
    _tamper(ks, "a", memlimit=2**40)
    with pytest.raises(KeystoreError, match="out-of-range"):
        ks.load_seed("a", "pw")
    _tamper(ks, "a", salt="zz")
    with pytest.raises(KeystoreError, match="corrupt"):
        ks.load_seed("a", "pw")
    (ks.keys_dir / "b.json").write_text("[" * 50_000)
    with pytest.raises(KeystoreError, match="not a key file"):
        ks.public_key("b")
    (ks.keys_dir / "c.json").write_text('{"version": 1, "public_key": 5}')
    names = [name for name, _ in ks.list()]
    assert names == ["a"]  # b and c are skipped, not fatal
