"""Start-up failures and storage faults with real node processes (DESIGN "Storage faults").

Every start-up failure: exit status 1, exactly one ``cannot start: ...`` line, no
traceback. A damaged store is refused with the ``--reindex`` remedy, and ``--reindex``
rebuilds it (re-syncing what was lost from a peer). A full disk stops the node with a
line saying why, and after freeing space it resumes with nothing acknowledged lost.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
from pathlib import Path

import plyvel
import pytest

from tests.functional.framework import (
    REPO_ROOT,
    SIGNAL_TIMEOUT,
    connect_nodes,
    make_genesis,
    sync_blocks,
    test_address,
    test_pubkey,
    test_seed,
    wait_until,
)
from wallet.rpcclient import RpcConnectionError, RpcError

pytestmark = pytest.mark.timeout(180)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs / read-only bind mount needs root")


def _last_run_output(node) -> str:
    """stdout+stderr of the node's most recent start (after the framework's banner)."""
    text = node.stdio_path.read_text(errors="replace")
    return text.rsplit("==== start", 1)[-1].split("\n", 1)[1]


def assert_cannot_start(node, expected: str) -> str:
    """Start ``node``; it must exit 1 with one ``cannot start:`` line containing ``expected``."""
    node.start(wait=False)
    status = node.wait_for_exit(60)
    output = _last_run_output(node)
    assert status == 1, f"exit status {status}\n{output}"
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot start: " in line]
    assert len(lines) == 1, output
    assert expected in lines[0], lines[0]
    return lines[0]


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("which", ["p2p", "rpc"])
def test_invalid_busy_port(nodes_factory, which):
    with _listening_socket() as busy:
        port = busy.getsockname()[1]
        node = nodes_factory.add_node()
        node.extra_args = [f"--{which}-port", str(port)]  # the last one given wins (click)
        assert_cannot_start(node, f"{which} port 127.0.0.1:{port} is already in use")


def test_invalid_store_locked_by_another_node(nodes_factory):
    (first,) = nodes_factory.start_nodes(1)
    second = nodes_factory.add_node()
    second.datadir = first.datadir
    second.stdio_path.parent.mkdir(parents=True, exist_ok=True)
    line = assert_cannot_start(second, "is in use by another process")
    assert "another node running on this --datadir" in line
    assert first.getinfo()["height"] == 0  # the running node is untouched


def test_invalid_foreign_genesis(nodes_factory, tmp_path):
    (node,) = nodes_factory.start_nodes(1)
    assert node.stop() == 0
    node.genesis_path = make_genesis(tmp_path / "other", [(test_address(7), 5)])
    assert_cannot_start(node, "the store belongs to another chain (genesis differs)")


def test_invalid_genesis_file(nodes_factory, tmp_path):
    bad = tmp_path / "bad-genesis.json"
    bad.write_text("{not json")
    node = nodes_factory.add_node()
    node.genesis_path = bad
    assert_cannot_start(node, "cannot read genesis file")


def test_invalid_readonly_datadir(nodes_factory, tmp_path):
    (node,) = nodes_factory.start_nodes(1)
    assert node.stop() == 0
    stdio = node.stdio_path.read_bytes()
    if IS_ROOT:  # root ignores permission bits: use a read-only bind mount
        subprocess.run(["mount", "--bind", str(node.datadir), str(node.datadir)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(node.datadir)], check=True)
        undo = ["umount", str(node.datadir)]
    else:
        os.chmod(node.datadir, 0o500)
        undo = None
    try:  # stdio.log lives in the read-only datadir: capture the output here
        result = subprocess.run(node.command(), capture_output=True, text=True, timeout=60,
                                cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            os.chmod(node.datadir, 0o700)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot start: " in line]
    assert len(lines) == 1 and "is not usable" in lines[0], output
    assert node.stdio_path.read_bytes() == stdio


# --------------------------------------------------------------------------- damaged stores


def _damage_newest_log(datadir: Path) -> None:
    """Overwrite 64 bytes in the middle of the store's newest write-ahead log."""
    logs = [p for p in glob.glob(str(datadir / "chain" / "*.log"))]
    newest = max(logs, key=os.path.getmtime)
    size = os.path.getsize(newest)
    assert size > 1000, f"{newest} holds only {size} bytes"
    with open(newest, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xff" * 64)


def test_invalid_damaged_log_refused_then_reindex_resyncs(nodes_factory):
    """The issue's silent rollback: a damaged .log used to restart the node lower or
    at genesis. Now it is refused; --reindex rebuilds and the peer supplies the rest."""
    node, peer = nodes_factory.start_nodes(2)
    node.generate(50)
    tip = sync_blocks([node, peer])
    expected = peer.rpc.call("getstatehash")
    assert node.stop() == 0
    _damage_newest_log(node.datadir)
    line = assert_cannot_start(node, "is corrupt (Corruption: ")
    assert "restart with --reindex" in line
    node.extra_args = ["--reindex"]
    node.start(connect=[peer])
    wait_until(lambda: node.getinfo()["best_hash"] == tip, 60, description="re-sync after reindex")
    assert node.rpc.call("getstatehash") == expected
    node.extra_args = []
    node.restart()
    assert node.rpc.call("getstatehash") == expected


def test_reindex_of_a_sound_store_keeps_chain_and_state(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    node.generate(20)
    before = node.rpc.call("getstatehash")
    node.extra_args = ["--reindex"]
    node.restart()
    assert node.rpc.call("getstatehash") == before
    assert "reindex done: height 20" in node.log_path.read_text()


def _edit_store(datadir: Path, edit) -> None:
    db = plyvel.DB(str(datadir / "chain"))
    try:
        edit(db)
    finally:
        db.close()


@pytest.mark.parametrize("damage, expected", [
    ("undo", "has no undo record"),
    ("tip", "the tip marker is missing"),
    ("height", "the height index at 5 does not name the tip block"),
    ("block", "the bytes of the tip-1 block"),
])
def test_invalid_inconsistent_tip(nodes_factory, damage, expected):
    (node,) = nodes_factory.start_nodes(1)
    hashes = [bytes.fromhex(h) for h in node.generate(5)]
    assert node.stop() == 0

    def edit(db):
        if damage == "undo":
            db.delete(b"u" + hashes[-1])
        elif damage == "tip":
            db.delete(b"T")
        elif damage == "height":
            db.put(b"n" + (5).to_bytes(8, "big"), hashes[0])
        else:
            db.delete(b"b" + hashes[-2])

    _edit_store(node.datadir, edit)
    line = assert_cannot_start(node, expected)
    assert "restart the node with --reindex" in line
    if damage != "block":  # the blocks are intact: --reindex restores everything
        node.extra_args = ["--reindex"]
        node.start()
        assert node.getinfo()["best_hash"] == hashes[-1].hex()


def test_invalid_interrupted_reindex_is_refused(nodes_factory):
    (node,) = nodes_factory.start_nodes(1)
    node.generate(3)
    assert node.stop() == 0
    _edit_store(node.datadir, lambda db: db.put(b"R", b""))
    assert_cannot_start(node, "an earlier --reindex was interrupted")


# --------------------------------------------------------------------------- disk full


def _fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the file system is full; return its path."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        for _ in range(100_000):  # bounded: 6.5 GB at most, far beyond the tmpfs size
            try:
                handle.write(chunk)
            except OSError:
                break
    for _ in range(1000):  # and the last partial pages
        try:
            with open(filler, "ab", buffering=0) as handle:
                handle.write(b"\0" * 512)
        except OSError:
            break
    return filler


@needs_root
def test_disk_full_stops_cleanly_and_resumes(nodes_factory, tmp_path):
    node = nodes_factory.add_node()
    node.datadir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(node.datadir)],
                   check=True)
    try:
        node.start()
        acknowledged = node.generate(5)
        _fill(node.datadir)
        with pytest.raises((RpcError, RpcConnectionError)) as caught:
            for _ in range(50):
                acknowledged += node.rpc.call("generate", 1, test_address(9))
        print("generate after fill:", repr(caught.value))
        if isinstance(caught.value, RpcError):
            assert caught.value.code == -20, caught.value
            assert caught.value.message.startswith("store write failed"), caught.value.message
        assert node.wait_for_exit(SIGNAL_TIMEOUT * 3) == 1
        output = _last_run_output(node)
        assert "Traceback" not in output and "internal error" not in output, output
        assert "store write failed" in output and "shutting down" in output, output
        (node.datadir / "filler").unlink()
        node.start()
        info = node.getinfo()
        assert info["height"] >= len(acknowledged)
        for height, block_hash in enumerate(acknowledged, 1):
            assert node.rpc.call("getblockhash", height) == block_hash
        node.generate(2)
        assert node.getinfo()["height"] == info["height"] + 2
        assert node.stop() == 0
    finally:
        node.kill()
        if subprocess.run(["umount", str(node.datadir)], check=False).returncode != 0:
            # still busy (a child not yet reaped): detach now, freed when the last user goes
            subprocess.run(["umount", "-l", str(node.datadir)], check=False)


def test_invalid_damaged_table_refused_then_reindex_resyncs(nodes_factory):
    """Damage inside a LevelDB table (.ldb) rather than the log: refused with the remedy;
    --reindex repairs what it can and the peer supplies the rest."""
    node, peer = nodes_factory.start_nodes(2)
    node.generate(60)
    tip = sync_blocks([node, peer])
    expected = peer.rpc.call("getstatehash")
    node.restart()  # re-opening turns the write-ahead log into a table
    assert node.stop() == 0
    tables = glob.glob(str(node.datadir / "chain" / "*.ldb"))
    assert tables, "no LevelDB table was written"
    biggest = max(tables, key=os.path.getsize)
    size = os.path.getsize(biggest)
    with open(biggest, "r+b") as handle:  # every data block of the table is damaged
        for offset in range(0, size - 4096, 2048):
            handle.seek(offset + 100)
            handle.write(b"\xa5" * 16)
    line = assert_cannot_start(node, "--reindex")
    assert "damaged" in line or "corrupt" in line, line
    node.extra_args = ["--reindex"]
    node.start(connect=[peer])
    assert "repairing the LevelDB files" in _last_run_output(node)
    wait_until(lambda: node.getinfo()["best_hash"] == tip, 60, description="re-sync after reindex")
    assert node.rpc.call("getstatehash") == expected


def test_sigkill_during_reindex_then_reindex_again(nodes_factory):
    """A reindex killed half-way leaves the store marked: a plain start refuses it (or,
    if the replay had finished, starts normally); --reindex again restores the state."""
    (node,) = nodes_factory.start_nodes(1)
    node.generate(150)
    expected = node.rpc.call("getstatehash")
    assert node.stop() == 0
    node.extra_args = ["--reindex"]
    node.start(wait=False)
    wait_until(lambda: "reindex: replaying" in node.log_path.read_text(), 60,
               description="reindex under way")
    node.kill()
    node.extra_args = []
    node.start(wait=False)
    try:
        node.wait_for_rpc()
    except Exception:  # noqa: BLE001 - refused: it must say why and what to do
        output = _last_run_output(node)
        assert node.wait_for_exit(30) == 1, output
        assert "an earlier --reindex was interrupted" in output, output
        node.extra_args = ["--reindex"]
        node.start()
    assert node.rpc.call("getstatehash") == expected


def _children(pid: int) -> list[int]:
    """Process ids of ``pid``'s live children (Linux ``/proc``; zombies left out)."""
    out = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            children = Path(path).read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        for child in children:
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                out.append(int(child))
    return out


def test_killed_worker_processes_are_replaced(nodes_factory):
    """A worker process that dies (OOM killer, an operator's kill) costs nothing but the
    checks it had in flight: later RPC batches, blocks and templates still work, and the
    node says why its pool was restarted (DESIGN "Worker processes")."""
    import httpx
    from consensus.tx import make_transfer

    (node,) = nodes_factory.start_nodes(1)
    genesis_hash = bytes.fromhex(node.getinfo()["genesis_hash"])
    user, _, password = (node.datadir / ".cookie").read_text().strip().partition(":")

    def send_batch(first_nonce: int) -> list[dict]:
        txs = [make_transfer(test_seed(k), genesis_hash, first_nonce + n, 10, test_pubkey(6),
                             100) for n in range(20) for k in range(4)]
        batch = [{"jsonrpc": "2.0", "id": i, "method": "sendrawtransaction",
                  "params": [tx.encode().hex()]} for i, tx in enumerate(txs)]
        return httpx.post(f"http://127.0.0.1:{node.rpc_port}/", json=batch,
                          auth=(user, password), timeout=60).json()

    assert all("result" in r for r in send_batch(0))
    workers = _children(node.process.pid)
    assert workers, "the node started no worker processes"
    for pid in workers:
        os.kill(pid, 9)
    wait_until(lambda: not set(workers) & set(_children(node.process.pid)), timeout=30)
    replies = send_batch(20)  # the batch that finds the pool broken
    assert all("result" in r for r in replies), replies[:3]
    assert all("result" in r for r in send_batch(40))
    node.generate(1)
    assert node.getinfo()["mempool"] == 0
    assert node.is_running()
    assert "worker process died" in node.log_path.read_text()
    assert set(_children(node.process.pid)) - set(workers)  # new workers serve
