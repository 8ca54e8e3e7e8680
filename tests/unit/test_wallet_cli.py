"""The ``microcash-wallet`` CLI (wallet/cli.py, wallet/commands/) through click's CliRunner.

Argument errors need no node. Commands that talk to a node get ``FakeNode``, an
in-memory stand-in for the JSON-RPC of SPEC §12 that the tests drive by hand (mine the
mempool, reject the next transaction with a reason).
"""

import json

import pytest
from click.testing import CliRunner

from consensus.address import encode_address
from consensus.escrow import EscrowState, compute_escrow_id, compute_min_penalty
from consensus.keys import public_key
from consensus.params import COIN, get_params
from consensus.tx import NONCE_KINDS, Tx
from wallet.cli import cli
from wallet.rpcclient import RpcClient, RpcError
from wallet.merchant.ticketstore import NewTicket, TicketStore
from wallet.walletdb import WalletDB

REGTEST = get_params("regtest")
GENESIS = bytes([0x42]) * 32
SEED = bytes(range(32))
PUB = public_key(SEED)
MERCHANT_A, MERCHANT_B = public_key(bytes([1]) * 32), public_key(bytes([2]) * 32)


class FakeNode:
    """Just enough of a node's JSON-RPC for the wallet: accounts, mempool, blocks."""

    def __init__(self):
        self.height = 10
        self.accounts = {PUB.hex(): [100 * COIN, 0]}  # hex -> [balance, nonce]
        self.mempool: dict[str, Tx] = {}
        self.confirmed: dict[str, int] = {}  # txid -> height
        self.escrows: dict[str, dict] = {}
        self.reject_next: str | None = None
        self.mine_on_poll = False  # gettransaction mines the mempool first
        self.burned = 0

    def block_hash(self, height):
        return bytes([height % 256]) * 32

    def mine(self):
        """One block holding the whole mempool."""
        self.height += 1
        for txid, tx in self.mempool.items():
            self.confirmed[txid] = self.height
            if tx.kind in NONCE_KINDS:
                self.accounts[tx.sender.hex()][1] += 1
        self.mempool.clear()

    def call(self, method, *params):
        return getattr(self, "rpc_" + method)(*params)

    def close(self):
        pass

    def rpc_getinfo(self):
        return {"chain": "regtest", "height": self.height, "best_hash": "00" * 32,
                "genesis_hash": GENESIS.hex(), "peers": 0, "mempool": len(self.mempool),
                "target": "ff" * 32, "burned": self.burned}

    def rpc_getaccount(self, address):
        balance, nonce = self.accounts.get(address, [0, 0])
        return {"address": encode_address(bytes.fromhex(address)), "balance": balance,
                "nonce": nonce}

    def rpc_sendrawtransaction(self, raw):
        if self.reject_next:
            reason, self.reject_next = self.reject_next, None
            raise RpcError(-26, reason, "detail text")
        tx = Tx.decode(bytes.fromhex(raw))
        self.mempool[tx.txid().hex()] = tx
        return tx.txid().hex()

    def rpc_gettransaction(self, txid):
        if self.mine_on_poll and txid in self.mempool:
            self.mine()
        if txid in self.mempool:
            return {"status": "mempool"}
        if txid in self.confirmed:
            h = self.confirmed[txid]
            return {"status": "confirmed", "height": h, "block_hash": self.block_hash(h).hex(),
                    "confirmations": self.height - h + 1}
        return None

    def rpc_getescrow(self, escrow_id):
        return self.escrows.get(escrow_id)

    def rpc_getredeemed(self, escrow_id):
        return self.__dict__.get("redeemed", [])

    def rpc_getdraw(self, escrow_id, group):
        """Winners: the first k seqnos of the group, once block t_draw + 1 exists."""
        escrow = EscrowState.from_rpc(self.escrows[escrow_id])
        t_draw = escrow.start + (group + 1) * escrow.draw_len - 1 + REGTEST.d_draw
        if self.height < t_draw + 1:
            raise RpcError(-1, "draw-not-ready")
        lo = group * escrow.draw_size
        return {"t_draw": t_draw, "vdf": "00" * 32,
                "winners": list(range(lo, lo + escrow.winners_per_draw))}


@pytest.fixture
def node(monkeypatch):
    """A FakeNode answering for the datadir ``<tmp>/node``; other datadirs stay real."""
    fake = FakeNode()
    real = RpcClient.from_datadir

    def from_datadir(cls, datadir, timeout=30):
        return fake if datadir.name == "node" else real(datadir, timeout)
    monkeypatch.setattr(RpcClient, "from_datadir", classmethod(from_datadir))
    return fake


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(*args, input=None)`` -> click Result, with a fresh wallet dir and a --datadir."""
    for var in ("MICROCASH_PASSPHRASE", "MICROCASH_DATADIR", "MICROCASH_WALLET_DIR"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def invoke(*args, input=None, node=True):
        base = ["--wallet-dir", str(tmp_path / "wallet")]
        if node:
            base += ["--datadir", str(tmp_path / "node")]
        return runner.invoke(cli, base + list(args), input=input)
    return invoke


def import_key(run, name="cust", seed=SEED):
    result = run("key", "import", name, "--seed-hex", seed.hex(), "--empty-passphrase")
    assert result.exit_code == 0, result.output
    return result


# ---- keys ---------------------------------------------------------------------------

def test_key_import_list_address(run):
    assert import_key(run).stdout.strip() == encode_address(PUB)
    listed = run("key", "list", "--json")
    assert json.loads(listed.stdout) == [{"name": "cust", "address": encode_address(PUB),
                                          "hex": PUB.hex()}]
    assert run("address", "cust").stdout.strip() == encode_address(PUB)
    assert run("address", "cust", "--hex").stdout.strip() == PUB.hex()


def test_key_new_with_passphrase_prompt_and_file(run, tmp_path):
    made = run("key", "new", "alice", input="s3cret\ns3cret\n")
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().splitlines()[-1].startswith("mc1")
    mismatch = run("key", "new", "bob", input="one\ntwo\none\none\n")
    assert mismatch.exit_code == 0 and "do not match" in mismatch.output
    pw = tmp_path / "pw"
    pw.write_text("filepass\n")
    assert run("--passphrase-file", str(pw), "key", "new", "carol").exit_code == 0


def test_invalid_key_commands(run, tmp_path):
    bad_hex = run("key", "import", "x", "--seed-hex", "abcd", "--empty-passphrase")
    assert bad_hex.exit_code == 2 and "64 hex digits" in bad_hex.output
    import_key(run)
    again = run("key", "import", "cust", "--seed-hex", SEED.hex(), "--empty-passphrase")
    assert again.exit_code == 1 and "error: key 'cust' already exists" in again.stderr
    assert again.stdout == ""
    bad_name = run("key", "new", "bad name!", "--empty-passphrase")
    assert bad_name.exit_code == 1 and "bad key name" in bad_name.stderr
    empty = run("key", "new", "dave", input="\n\n")
    assert empty.exit_code == 1 and "empty passphrase refused" in empty.stderr
    missing = run("address", "nobody")
    assert missing.exit_code == 1 and "no key named 'nobody'" in missing.stderr
    nofile = run("--passphrase-file", str(tmp_path / "none"), "key", "new", "erin")
    assert nofile.exit_code == 1 and "cannot read --passphrase-file" in nofile.stderr


# ---- node options -------------------------------------------------------------------

def test_invalid_node_options(run, tmp_path):
    no_node = run("balance", PUB.hex(), node=False)
    assert no_node.exit_code == 1 and "error: no node given: pass --datadir" in no_node.stderr
    down = run("balance", PUB.hex())  # real RpcClient: no ports.json there
    assert down.exit_code == 1
    assert "error: cannot reach the node: node not running?" in down.stderr
    assert "Traceback" not in down.output
    no_cookie = run("--rpc-url", "http://127.0.0.1:1/", "balance", PUB.hex(), node=False)
    assert no_cookie.exit_code == 1 and "--rpc-url needs --rpc-cookie" in no_cookie.stderr
    bad_url = run("--rpc-url", "localhost:1", "balance", PUB.hex(), node=False)
    assert bad_url.exit_code == 2 and "not an http(s) URL" in bad_url.output
    both = run("--rpc-url", "http://127.0.0.1:1/", "balance", PUB.hex())
    assert both.exit_code == 2 and "not both" in both.output
    unreachable = run("--rpc-url", "http://127.0.0.1:1/", "--rpc-cookie",
                      str(tmp_path / "nocookie"), "balance", PUB.hex(), node=False)
    assert unreachable.exit_code == 1 and "cannot reach the node" in unreachable.stderr


# ---- balance and send ---------------------------------------------------------------

def test_balance_by_name_and_address(run, node):
    import_key(run)
    text = run("balance", "cust")
    assert text.exit_code == 0, text.output
    assert "balance: 100.0 MCASH (10000000000 units)" in text.stdout
    data = json.loads(run("balance", encode_address(MERCHANT_A), "--json").stdout)
    assert (data["balance"], data["nonce"], data["height"]) == (0, 0, 10)
    unknown = run("balance", "nobody")
    assert unknown.exit_code == 2 and "neither a key" in unknown.output


def test_send_tracks_unconfirmed_nonces(run, node):
    import_key(run)
    first = json.loads(run("send", "cust", MERCHANT_A.hex(), "1.5", "--json").stdout)
    second = json.loads(run("send", "cust", encode_address(MERCHANT_A), "150u",
                            "--fee", "0", "--json").stdout)
    assert (first["nonce"], first["amount"], first["fee"]) == (0, 150_000_000, 1000)
    assert (second["nonce"], second["amount"], second["fee"]) == (1, 150, 0)
    node.mine()
    third = json.loads(run("send", "cust", MERCHANT_A.hex(), "1", "--json").stdout)
    assert third["nonce"] == 2
    node.mempool.clear()  # the third transaction is evicted: its nonce is free again
    fourth = json.loads(run("send", "cust", MERCHANT_A.hex(), "1", "--json").stdout)
    assert fourth["nonce"] == 2


def test_send_wait_reports_height(run, node):
    import_key(run)
    node.mine_on_poll = True
    result = run("send", "cust", MERCHANT_A.hex(), "2", "--wait", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["status"], data["height"]) == ("confirmed", 11)
    assert "waiting for" in result.stderr


def test_invalid_send(run, node):
    import_key(run)
    for amount, why in (("0", "must be more than 0"), ("1.5u", "whole number"),
                        ("1,5", "not an amount"), ("1.123456789", "9 decimal places")):
        result = run("send", "cust", MERCHANT_A.hex(), amount)
        assert result.exit_code == 2 and why in result.output, result.output
    poor = run("send", "cust", MERCHANT_A.hex(), "100")
    assert poor.exit_code == 1
    assert "error: insufficient funds: cust has 100.0 MCASH" in poor.stderr
    bad_fee = run("send", "cust", MERCHANT_A.hex(), "1", "--fee", "1.5")
    assert bad_fee.exit_code == 2 and "not a whole number of units" in bad_fee.output
    node.reject_next = "bad-nonce"
    rejected = run("send", "cust", MERCHANT_A.hex(), "1")
    assert rejected.exit_code == 1
    assert rejected.stderr.splitlines()[0] == "error: node rejected the transaction: bad-nonce"
    assert "Traceback" not in rejected.output


# ---- escrow create ------------------------------------------------------------------

ESCROW_ARGS = ("--merchant", MERCHANT_A.hex(), "--merchant", encode_address(MERCHANT_B),
               "--beta", "1000", "--p", "1/2", "--tkt-rate", "4", "--rounds", "4",
               "--draw-len", "2")


def test_escrow_create_wait_prints_schedule_and_records(run, node):
    import_key(run)
    node.mine_on_poll = True
    result = run("escrow", "create", "cust", *ESCROW_ARGS, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    least = compute_min_penalty(REGTEST, 2, 1, 2, 1000, 4, 2)
    assert (data["escrow_amount"], data["penalty_amount"], data["min_penalty"]) == (
        8000, least, least)
    assert data["created_height"] == 11 and data["start"] == 14  # h + confirm_depth + 1
    assert data["escrow_id"] == compute_escrow_id(node.block_hash(11),
                                                  bytes.fromhex(data["txid"])).hex()
    assert [g["t_draw"] for g in data["groups"]] == [18, 20]
    assert data["t_refund"] == 26 and data["k"] == 4
    tx = Tx.decode(node.sent[data["txid"]])
    assert tx.body[:7] == [8000, least, 1, 2, 1000, 4, 2]
    assert tx.body[7] == [MERCHANT_A, MERCHANT_B]
    listed = json.loads(run("escrow", "list", "--json").stdout)
    assert [e["escrow_id"] for e in listed["escrows"]] == [data["escrow_id"]]
    text = run("escrow", "create", "cust", *ESCROW_ARGS, "--penalty", str(least + 5))
    assert text.exit_code == 0, text.output
    assert "round 17: seqnos 8-11" in text.stdout and "t_refund:   27" in text.stdout


@pytest.fixture(autouse=True)
def keep_sent(monkeypatch):
    """Let FakeNode remember every accepted transaction's bytes in ``node.sent``."""
    original = FakeNode.rpc_sendrawtransaction

    def recording(self, raw):
        txid = original(self, raw)
        self.__dict__.setdefault("sent", {})[txid] = bytes.fromhex(raw)
        return txid
    monkeypatch.setattr(FakeNode, "rpc_sendrawtransaction", recording)


def test_escrow_create_no_wait_then_list_resolves_id(run, node, tmp_path):
    import_key(run)
    sent = run("escrow", "create", "cust", *ESCROW_ARGS, "--no-wait", "--json")
    assert sent.exit_code == 0, sent.output
    txid = json.loads(sent.stdout)["txid"]
    pending = json.loads(run("escrow", "list", "--json").stdout)["escrows"]
    assert [(e["txid"], e["state"]) for e in pending] == [(txid, "pending")]
    node.mine()
    node.escrows = {}  # id resolved from the block even though getescrow says nothing
    listed = json.loads(run("escrow", "list", "--json").stdout)["escrows"]
    expected = compute_escrow_id(node.block_hash(11), bytes.fromhex(txid)).hex()
    assert [(e["escrow_id"], e["start"], e["state"]) for e in listed] == [
        (expected, 14, "unknown")]
    node.height = 26  # t_refund passed: getescrow null means refunded
    assert "refunded" in run("escrow", "list").stdout
    offline = run("--datadir", str(tmp_path / "elsewhere"), "escrow", "list")
    assert offline.exit_code == 0, offline.output
    assert f"{expected}  ?" in offline.stdout and "node unreachable" in offline.stdout


def test_invalid_escrow_create(run, node):
    import_key(run)
    cases = [
        (("--p", "0/3"), "0 < NUM <= DEN"), (("--p", "3/2"), "0 < NUM <= DEN"),
        (("--p", "half"), "not a fraction"), (("--p", "1/3"), "not a whole number of units"),
        (("--rounds", "3"), "multiple of --draw-len"), (("--draw-len", "9", "--rounds", "9"),
                                                        "draw-len <= 8"),
        (("--p", "1/16"), "whole number >= 1"), (("--penalty", "5"), "too low"),
        (("--beta", "0"), "at least 1"), (("--merchant", MERCHANT_A.hex()), "given twice"),
    ]
    for extra, why in cases:
        result = run("escrow", "create", "cust", *ESCROW_ARGS, *extra)
        assert result.exit_code == 2 and why in result.output, (extra, result.output)
    missing = run("escrow", "create", "cust", "--beta", "1")
    assert missing.exit_code == 2 and "Missing option" in missing.output
    node.accounts[PUB.hex()][0] = 9000
    poor = run("escrow", "create", "cust", *ESCROW_ARGS)
    assert poor.exit_code == 1 and "error: insufficient funds" in poor.stderr
    assert "8000 (escrow) +" in poor.stderr
    node.accounts[PUB.hex()][0] = 100 * COIN
    node.reject_next = "penalty-too-low"
    rejected = run("escrow", "create", "cust", *ESCROW_ARGS)
    assert rejected.stderr.splitlines()[0] == (
        "error: node rejected the transaction: penalty-too-low")
    assert json.loads(run("escrow", "list", "--json").stdout)["escrows"] == []


# ---- escrow show / ticket issue / cheat without a chain -----------------------------

def test_escrow_show_unknown_and_bad_id(run, node):
    bad = run("escrow", "show", "1234")
    assert bad.exit_code == 2 and "64 hex digits" in bad.output
    gone = run("escrow", "show", "ab" * 32, "--json")
    assert json.loads(gone.stdout)["status"] == "unknown"


def test_escrow_show_draws_and_redeemed(run, node):
    eid = "cd" * 32
    # start 8, tkt_rate 2, draw_len 1, 20 groups: t_draw(g) = 11 + g, t_expire = 17 + g
    escrow = EscrowState(PUB, 80, 7, 1, 2, 4, 2, 1, 20, (MERCHANT_A, MERCHANT_B), 5, 8, 36,
                         False)
    node.escrows[eid] = {"escrow_id": eid, **escrow.to_json()}
    node.height = 13  # groups 0 and 1 drawn (blocks 12, 13); group 0 redeemable until 17
    node.redeemed = [[0, 1, 13]]
    data = json.loads(run("escrow", "show", eid, "--json").stdout)
    assert len(data["groups"]) == 20 and data["status"] == "active"
    assert [g["winners"] for g in data["groups"][:3]] == [[0], [2], None]
    assert data["groups"][0]["redeemed"] == [{"seqno": 0, "merchant_index": 1, "height": 13}]
    assert data["groups"][0]["status"] == "drawn; redeemable until 17"
    assert data["groups"][2]["status"] == "waiting for the draw (block 14)"
    assert data["groups"][6]["status"] == "issuing"
    assert data["groups"][19]["status"] == "not started"
    text = run("escrow", "show", eid).stdout
    assert "group 0: drawn; redeemable until 17; winners 0; redeemed 0 by merchant 1 at 13" in text
    assert "group 1: drawn; redeemable until 18; winners 2; nothing redeemed yet" in text
    assert "... 13 more groups (all of them with --json) ..." in text
    assert "group 19: not started" in text and "group 10:" not in text
    assert "now:        best height 13, current round 14" in text


def test_invalid_ticket_issue(run, node, tmp_path):
    import_key(run)
    eid = "ab" * 32
    both = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "1",
               "--to", "http://127.0.0.1:1", "--out", str(tmp_path / "t"))
    assert both.exit_code == 2 and "exactly one of --to URL or --out FILE" in both.output
    neither = run("ticket", "issue", "cust", eid, "--count", "1", "--to", "http://x")
    assert neither.exit_code == 2 and "--merchant or --merchant-index" in neither.output
    bad_url = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "1",
                  "--to", "127.0.0.1:80")
    assert bad_url.exit_code == 2 and "not an http(s) URL" in bad_url.output
    zero = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "0",
               "--to", "http://x")
    assert zero.exit_code == 2
    unknown = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "1",
                  "--out", str(tmp_path / "t"))
    assert unknown.exit_code == 1 and "is unknown to the node" in unknown.stderr
    escrow = EscrowState(PUB, 8, 1, 1, 2, 1, 4, 2, 4, (MERCHANT_A,), 5, 8, 20, False)
    node.escrows[eid] = {"escrow_id": eid, **escrow.to_json()}
    index = run("ticket", "issue", "cust", eid, "--merchant-index", "3", "--count", "1",
                "--out", str(tmp_path / "t"))
    assert index.exit_code == 2 and "has 1 merchants" in index.output
    early = run("ticket", "issue", "cust", eid, "--merchant", MERCHANT_A.hex(), "--count", "1",
                "--out", str(tmp_path / "t"))  # height 10: round 11 is within 8..11
    assert early.exit_code == 0, early.output
    assert "seqnos 12-12 of round 11" in early.stdout
    down = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "2",
               "--to", "http://127.0.0.1:1")
    assert down.exit_code == 1 and "cannot reach merchant" in down.stderr
    kept = tmp_path / "wallet" / "undelivered" / f"{eid}-13-14.tkt"
    assert f"saved in {kept}" in down.stderr and kept.stat().st_size == 2 * 107
    exists = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "1",
                 "--out", str(tmp_path / "t"))
    assert exists.exit_code == 2 and "exists" in exists.output
    node.height = 11  # round 12: issuing is over
    late = run("ticket", "issue", "cust", eid, "--merchant-index", "0", "--count", "1",
               "--out", str(tmp_path / "t2"))
    assert late.exit_code == 1 and "error: round 12 is outside" in late.stderr


def test_invalid_cheat_report(run, node, tmp_path):
    import_key(run)
    junk = tmp_path / "junk.tkt"
    junk.write_bytes(b"x" * 100)
    result = run("cheat", "report", "cust", str(junk))
    assert result.exit_code == 2 and "not a multiple of 107" in result.output
    absent = run("cheat", "report", "cust", str(tmp_path / "absent.tkt"))
    assert absent.exit_code == 2 and "does not exist" in absent.output


# ---- merchant status from the store -------------------------------------------------

def test_merchant_status_reads_store_without_service(run, tmp_path):
    import_key(run, "shop", bytes([1]) * 32)
    eid = bytes([5]) * 32
    store_dir = tmp_path / "wallet" / "merchants" / "shop" / "store"
    with TicketStore(store_dir) as store:
        store.add_tickets([NewTicket(eid, s, 0, 8, 0, 12, 18, bytes(107)) for s in range(3)])
    counts = json.loads(run("merchant", "status", "shop", "--json", node=False).stdout)
    assert counts["source"] == "store"
    assert counts["escrows"][eid.hex()]["held"] == 3
    assert counts["units_redeemed"] is None  # beta unknown without a node
    WalletDB(tmp_path / "wallet").remember_betas({eid.hex(): 250})
    text = run("merchant", "status", "shop", node=False)
    assert "3 held" in text.stdout and "total redeemed: 0 units" in text.stdout
    missing = run("merchant", "status", "nobody", node=False)
    assert missing.exit_code == 1 and "no key named 'nobody'" in missing.stderr


# ---- start-up -----------------------------------------------------------------------

def test_help_lists_every_command_without_importing_it(run):
    import click

    from wallet.cli import COMMANDS
    ctx = click.Context(cli)
    for name, (_, short) in COMMANDS.items():
        assert cli.get_command(ctx, name).get_short_help_str(10**6) == short, name
    shown = run("--help", node=False)
    assert shown.exit_code == 0
    assert all(name in shown.stdout for name in COMMANDS)


def test_balance_imports_no_heavy_module(tmp_path):
    """`balance` loads neither the merchant's stack nor a store nor an async HTTP client."""
    import subprocess
    import sys
    code = ("import sys; from wallet.cli import cli\n"
            "try:\n    cli(['--wallet-dir', sys.argv[1], 'balance', '00' * 32])\n"
            "except SystemExit:\n    pass\n"
            "print(' '.join(m for m in ('trio', 'httpx', 'hypercorn', 'starlette', 'plyvel', "
            "'nacl.pwhash', 'consensus.escrow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert "no node given" in result.stderr
    assert result.stdout.strip() == ""


# ---- payment channels (SPEC §16): argument errors before anything is sent ----------------

def test_invalid_channel_open_penalty_and_guidance(run):
    import_key(run)
    both = run("channel", "open", "cust", "--payee", encode_address(bytes(32)), "--deposit",
               "1", "--penalty", "5", "--price", "3", "--blocks", "5", node=False)
    assert both.exit_code == 2 and "either --penalty or the guidance" in both.output
    part = run("channel", "open", "cust", "--payee", encode_address(bytes(32)), "--deposit",
               "1", "--price", "3", "--blocks", "5", node=False)
    assert part.exit_code == 2 and "needs all of --sync-interval" in part.output
    short = run("channel", "open", "cust", "--payee", encode_address(bytes(32)), "--deposit",
                "1", "--blocks", "1", node=False)
    assert short.exit_code == 2 and "--blocks" in short.output


def test_invalid_channel_pay_unknown_channel(run):
    import_key(run)
    result = run("channel", "pay", "cust", "ab" * 32, "--amount", "1", "--to",
                 "http://127.0.0.1:9", node=False)
    assert result.exit_code == 1 and result.stderr.startswith("error: no channel " + "ab" * 32)
