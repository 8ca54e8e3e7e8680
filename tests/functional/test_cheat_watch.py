"""Automatic proofs of cheating with real nodes and real `merchant serve` processes
(issue 8 points 1 and 2; DESIGN "Ticket watch between merchants").

- Two nodes, one merchant on each. The customer gives one sequence number to both
  merchants; the merchants announce what they accept through the node network (`watch` /
  `tktann`), a node sees the two tickets, and a merchant's cheat watch sends the
  CHEAT_PROOF. Blocks are mined at a steady pace; the escrow must be broken on chain
  before `t_draw` of that seqno's group, with no `cheat report` by hand.
- One node, one merchant: a signed ticket with seqno >= N is refused, kept as evidence
  and proven on chain by the merchant itself.
- One node and raw wire peers: tickets go only to a peer that subscribed, subscriptions
  travel one hop further (never back), a peer's ticket completes a conflict, and a
  forged ticket gets its sender banned.
"""

from __future__ import annotations

import time

from consensus.escrow import (EscrowState, compute_escrow_amount, compute_escrow_id,
                              compute_min_penalty, compute_t_draw)
from consensus.params import get_params
from consensus.ticket import sign_ticket
from consensus.tx import make_escrow_create
from tests.functional.test_p2p_misbehave import Peers, assert_refused
from tests.functional.framework import connect_nodes, test_address, test_seed, wait_until
from tests.functional.test_wallet_flow import Wallet, processes, start_merchant  # noqa: F401
from wallet.customer.issuer import send_tickets

PARAMS = get_params("regtest")
CUSTOMER = 0
MERCHANT_KEYS = {"ma": 1, "mb": 2}
BETA, TKT_RATE, DRAW_LEN, ROUNDS = 1000, 4, 1, 4  # p = 1/2
BLOCK_PACE = 1.0  # seconds between blocks while the watch works (regtest block_time)


def open_merchant(node, tmp_path, name: str, processes) -> str:  # noqa: F811
    """A wallet holding merchant key NAME (a fixed test key) and its running service."""
    wallet = Wallet(tmp_path / f"wallet-{name}", node.datadir)
    wallet.run("key", "import", name, "--seed-hex", test_seed(MERCHANT_KEYS[name]).hex(),
               "--empty-passphrase")
    return start_merchant(wallet, name, processes)


def create_escrow(node, merchants: list[bytes]) -> tuple[bytes, EscrowState]:
    """An ESCROW_CREATE by the customer key with the least penalty, mined; (id, state)."""
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    amount = compute_escrow_amount(1, 2, BETA, TKT_RATE, ROUNDS)
    penalty = compute_min_penalty(PARAMS, len(merchants), 1, 2, BETA, TKT_RATE, DRAW_LEN)
    nonce = node.rpc.call("getaccount", test_address(CUSTOMER))["nonce"]
    tx = make_escrow_create(test_seed(CUSTOMER), genesis, nonce, 0, amount, penalty, 1, 2,
                            BETA, TKT_RATE, DRAW_LEN, merchants)
    txid = node.rpc.call("sendrawtransaction", tx.encode().hex())
    node.generate(1)
    found = node.rpc.call("gettransaction", txid)
    eid = compute_escrow_id(bytes.fromhex(found["block_hash"]), bytes.fromhex(txid))
    return eid, EscrowState.from_rpc(node.rpc.call("getescrow", eid.hex()))


def mine_until(nodes, predicate, last_height: int, what: str) -> int:
    """Mine one block every BLOCK_PACE s on nodes[0] until ``predicate()`` holds (checked
    between blocks) or the tip reaches ``last_height``; the height it held at."""
    node = nodes[0]
    while True:
        deadline = time.monotonic() + BLOCK_PACE
        while time.monotonic() < deadline:
            if predicate():
                return node.getinfo()["height"]
            time.sleep(0.05)
        height = node.getinfo()["height"]
        assert height < last_height, f"{what} did not happen by height {last_height}"
        node.generate(1)
        wait_until(lambda: all(n.getinfo()["height"] == height + 1 for n in nodes), timeout=10,
                   description="the nodes to sync")


def test_duplicate_to_merchants_on_two_nodes_is_proven_before_its_draw(
        nodes_factory, tmp_path, processes):  # noqa: F811
    node_a, node_b = nodes_factory.start_nodes(2, connect="none")
    connect_nodes(node_b, node_a)
    url = {"ma": open_merchant(node_a, tmp_path, "ma", processes),
           "mb": open_merchant(node_b, tmp_path, "mb", processes)}
    merchants = [bytes.fromhex(test_address(i)) for i in MERCHANT_KEYS.values()]
    eid, escrow = create_escrow(node_a, merchants)
    node_a.generate(escrow.start - 2 - node_a.getinfo()["height"])  # round `start` is open
    wait_until(lambda: node_b.getinfo()["height"] == escrow.start - 2, timeout=10)
    # Both nodes learn the other merchant's subscription (so relays go both ways).
    wait_until(lambda: all(n.rpc.call("getwatchinfo")["peers"] for n in (node_a, node_b)),
               timeout=15, interval=0.1, description="subscriptions to reach the peers")

    genesis = bytes.fromhex(node_a.getinfo()["genesis_hash"])
    seqno = 2  # round `start`, group 0
    t_draw = compute_t_draw(PARAMS, escrow, seqno // escrow.draw_size)
    for index, name in enumerate(("ma", "mb")):
        reply = send_tickets(url[name], [sign_ticket(test_seed(CUSTOMER), genesis, eid, index,
                                                     seqno)])
        assert reply == {"accepted": 1, "rejected": []}, (name, reply)
    issued_at = node_a.getinfo()["height"]

    broken_at = mine_until(
        [node_a, node_b],
        lambda: node_a.rpc.call("getescrow", eid.hex())["broken"], t_draw,
        "breaking the escrow")
    assert broken_at < t_draw, (issued_at, broken_at, t_draw)
    assert node_a.getinfo()["burned"] == escrow.penalty_balance
    conflicts = node_b.rpc.call("getconflicts")["conflicts"]
    assert [(c["seqno"], c["kind"]) for c in conflicts] == [(seqno, "duplicate")]

    # Each merchant's status tells what became of its proof: one confirmed, the other
    # confirmed too (it won the race) or moot (the escrow was already broken).
    def proofs(name: str) -> list[dict]:
        wallet = Wallet(tmp_path / f"wallet-{name}", (node_a if name == "ma" else node_b).datadir)
        return wallet.json("merchant", "status", name)["cheat_proofs"]

    settled = wait_until(
        lambda: (lambda p: p if all(x["status"] in ("confirmed", "moot") for x in p)
                 and len(p) == 2 else None)(proofs("ma") + proofs("mb")),
        timeout=20, interval=0.3, description="both merchants to settle their proofs")
    assert [(p["kind"], p["seqno"]) for p in settled] == [("duplicate", seqno)] * 2
    confirmed = [p for p in settled if p["status"] == "confirmed"]
    assert len(confirmed) == 1 and confirmed[0]["height"] == broken_at
    refused = send_tickets(url["ma"], [sign_ticket(test_seed(CUSTOMER), genesis, eid, 0, 3)])
    assert refused["rejected"] == [{"index": 0, "reason": "escrow-broken"}]


def test_out_of_range_ticket_is_proven_by_the_merchant_itself(
        nodes_factory, tmp_path, processes):  # noqa: F811
    node = nodes_factory.start_node()
    url = open_merchant(node, tmp_path, "ma", processes)
    eid, escrow = create_escrow(node, [bytes.fromhex(test_address(MERCHANT_KEYS["ma"]))])
    node.generate(escrow.start - 2 - node.getinfo()["height"])
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    bad = sign_ticket(test_seed(CUSTOMER), genesis, eid, 0, escrow.N)
    reply = send_tickets(url, [bad])
    assert reply["rejected"] == [{"index": 0, "reason": "seqno-out-of-range"}]
    broken_at = mine_until([node], lambda: node.rpc.call("getescrow", eid.hex())["broken"],
                           escrow.t_refund, "the out-of-range proof")
    assert broken_at <= escrow.start  # within a block or two of the ticket
    assert node.getinfo()["burned"] == escrow.penalty_balance


def test_wire_relay_only_to_subscribers_and_forgeries_are_banned(nodes_factory):
    node = nodes_factory.start_node()
    eid, escrow = create_escrow(node, [bytes.fromhex(test_address(i)) for i in (1, 2)])
    peers = Peers(node)
    try:
        watcher, other = peers.handshake("127.0.0.3"), peers.handshake("127.0.0.4")
        watcher.send_msg("watch", [[eid, 0]])
        # the node passes the subscription on, one hop further, to the other peer only
        assert other.wait_for("watch", timeout=10) == [[eid, 1]]
        genesis = peers.genesis_hash
        mine = sign_ticket(test_seed(CUSTOMER), genesis, eid, 0, 1).encode()
        result = node.rpc.call("announcetickets", eid.hex(), [mine.hex()])
        assert (result["new"], result["conflicts"]) == (1, [])
        assert watcher.wait_for("tktann", timeout=10) == [eid, [mine]]
        twin = sign_ticket(test_seed(CUSTOMER), genesis, eid, 1, 1).encode()
        watcher.send_msg("tktann", [eid, [twin]])
        found = wait_until(lambda: node.rpc.call("getconflicts")["conflicts"], timeout=10)
        assert [(c["seqno"], c["kind"], c["source"]) for c in found] == [(1, "duplicate", "peer")]
        assert found[0]["tickets"] == [mine.hex(), twin.hex()]
        try:  # `other` never subscribed: it gets no tickets
            other.wait_for("tktann", timeout=1)
            raise AssertionError("an unsubscribed peer received tickets")
        except TimeoutError:
            pass
        forged = sign_ticket(test_seed(7), genesis, eid, 0, 2).encode()
        other.send_msg("watch", [[eid, 0]])
        other.send_msg("tktann", [eid, [forged]])
        assert other.is_disconnected(10)
        assert_refused(peers, "127.0.0.4")
        assert node.getinfo()["height"] >= escrow.created_height
    finally:
        peers.close_all()
