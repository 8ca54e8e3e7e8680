"""Explorer pages and /metrics of a real Node (real LevelDB store, blocks connected
through ChainState), served by the explorer's Starlette app alone via TestClient."""

import re
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from starlette.testclient import TestClient

from consensus.address import encode_address
from consensus.escrow import compute_escrow_amount, compute_escrow_id, compute_min_penalty
from consensus.ticket import sign_ticket
from consensus.channel import compute_channel_id
from consensus.micropay import compute_mp_escrow_id
from consensus.tx import (make_channel_open, make_cheat_proof, make_escrow_create,
                          make_mp_escrow, make_transfer)
from node.explorer import ExplorerData, make_app
from node.node import Node
from tests.consensus_helpers import (ALICE, ALICE_SEED, BOB, BOB_SEED, CAROL, CAROL_SEED,
                                     DAVE, regtest_params)
from tests.functional.chaindata import make_block

PARAMS = regtest_params()


def _escrow_tx(node, seed, nonce, merchants, *, tkt_rate=10, draw_len=1, rounds=8):
    amount = compute_escrow_amount(1, 10, 1000, tkt_rate, rounds)
    penalty = compute_min_penalty(PARAMS, len(merchants), 1, 10, 1000, tkt_rate, draw_len)
    return make_escrow_create(seed, node.genesis_hash, nonce, 0, amount, penalty, 1, 10, 1000,
                              tkt_rate, draw_len, merchants)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A node at height ~12: a transfer, two escrows, a proof of cheating, a drawn group."""
    node = Node(PARAMS, tmp_path_factory.mktemp("explorer"), workers=0)

    def mine(*txs):
        block = make_block(node.rpc_methods["getblock"](node.chain.height), txs)
        result, change = node.chain.add_block(block.encode())
        node._after_tip_change(change)  # metrics, mempool, tip watchers: as process_block
        assert result.status.name == "CONNECTED", result
        return block

    transfer = make_transfer(ALICE_SEED, node.genesis_hash, 0, 0, DAVE, 12345)
    honest = _escrow_tx(node, ALICE_SEED, 1, [BOB, CAROL])
    cheater = _escrow_tx(node, BOB_SEED, 0, [ALICE, CAROL])
    b1 = mine(transfer, honest, cheater)
    eid = compute_escrow_id(b1.hash(), honest.txid())
    cid = compute_escrow_id(b1.hash(), cheater.txid())
    mine()
    ticket_a = sign_ticket(BOB_SEED, node.genesis_hash, cid, 0, 0)
    ticket_b = sign_ticket(BOB_SEED, node.genesis_hash, cid, 1, 0)
    proof = make_cheat_proof(CAROL_SEED, node.genesis_hash, 0, ticket_a, ticket_b)
    mine(proof)
    channel = make_channel_open(ALICE_SEED, node.genesis_hash, 2, 0, CAROL, 10**8, 10**7, 300)
    micropay = make_mp_escrow(BOB_SEED, node.genesis_hash, 1, 0, 5 * 10**6, 4, 200)
    mine(channel, micropay)
    for _ in range(9):
        mine()  # the channel/MP block is now tip - 9
    client = TestClient(make_app(ExplorerData(node), node.metrics))
    yield {"node": node, "client": client, "escrow": eid.hex(), "cheated": cid.hex(),
           "transfer": transfer.txid().hex(), "proof": proof.txid().hex(), "b1": b1,
           "channel": compute_channel_id(channel.txid()).hex(),
           "mp": compute_mp_escrow_id(micropay.txid()).hex()}
    node.store.close()


def test_front_page_shows_tip_blocks_and_cheat(chain):
    node, client = chain["node"], chain["client"]
    page = client.get("/")
    assert page.status_code == 200
    assert f'id="tip-height">{node.chain.height}<' in page.text
    assert node.chain.tip.hash.hex() in page.text
    assert "CHEAT_PROOF" in page.text and chain["cheated"] in page.text
    assert chain["escrow"] in page.text  # recent escrows
    assert "<svg" in page.text and page.text.count("<rect") == node.chain.height + 1
    burned = node.rpc_methods["getinfo"]()["burned"]
    assert burned > 0


def test_block_page_lists_transactions(chain):
    client, b1 = chain["client"], chain["b1"]
    for ident in ("1", b1.hash().hex()):
        page = client.get(f"/block/{ident}")
        assert page.status_code == 200
        for tx in b1.txs:
            assert f'id="tx-{tx.txid().hex()}"' in page.text
    assert "ESCROW_CREATE" in page.text and chain["escrow"] in page.text
    assert encode_address(DAVE) in page.text


def test_transaction_page(chain):
    page = chain["client"].get(f"/tx/{chain['proof']}")
    assert page.status_code == 200
    assert "Confirmed in block" in page.text and "given to merchants 0 and 1" in page.text


def test_escrow_page_schedule_draws_and_broken(chain):
    client, node = chain["client"], chain["node"]
    page = client.get(f"/escrow/{chain['escrow']}")
    assert page.status_code == 200
    draw = node.rpc_methods["getdraw"](chain["escrow"], 0)
    row = re.search(r'<tr class="drawn">.*?</tr>', page.text, re.S).group(0)
    for seqno in draw["winners"]:
        assert f">{seqno}<" in row
    assert "revealed at block" in page.text  # group 1 is still ahead
    broken = client.get(f"/escrow/{chain['cheated']}")
    assert 'id="broken"' in broken.text


def test_account_page_lists_escrows(chain):
    client = chain["client"]
    page = client.get(f"/account/{encode_address(ALICE)}")
    assert page.status_code == 200
    assert chain["escrow"] in page.text  # owned
    assert chain["cheated"] in page.text  # ALICE is a merchant of BOB's escrow
    assert client.get(f"/account/{DAVE.hex()}").text.count("12345 units") == 1


def test_micropay_escrow_and_channel_pages(chain):
    client = chain["client"]
    front = client.get("/").text
    assert chain["channel"] in front and chain["mp"] in front
    mp = client.get(f"/mpescrow/{chain['mp']}")
    assert mp.status_code == 200 and "0.05 MCASH" in mp.text and "2^-4" in mp.text
    channel = client.get(f"/channel/{chain['channel']}")
    assert channel.status_code == 200 and encode_address(CAROL) in channel.text
    assert "1 MCASH" in channel.text
    block = client.get(f"/block/{chain['node'].chain.height - 9}").text
    assert "CHANNEL_OPEN" in block and "MP_ESCROW" in block
    for query, path in ((chain["channel"], "channel"), (chain["mp"], "mpescrow")):
        reply = client.get("/search", params={"q": query}, follow_redirects=False)
        assert reply.headers["location"] == f"/{path}/{query}"


def test_search_redirects(chain):
    client, b1 = chain["client"], chain["b1"]
    cases = {"3": "/block/3", b1.hash().hex(): f"/block/{b1.hash().hex()}",
             chain["transfer"]: f"/tx/{chain['transfer']}",
             chain["escrow"]: f"/escrow/{chain['escrow']}",
             encode_address(BOB): f"/account/{encode_address(BOB)}"}
    for query, target in cases.items():
        reply = client.get("/search", params={"q": query}, follow_redirects=False)
        assert (reply.status_code, reply.headers["location"]) == (303, target)


@pytest.mark.parametrize("path,status", [
    ("/block/zz", 400), ("/block/99999", 404), ("/block/" + "ab" * 32, 404),
    ("/tx/12", 400), ("/escrow/" + "00" * 32, 404), ("/mpescrow/" + "00" * 32, 404),
    ("/channel/" + "00" * 32, 404), ("/account/not-an-address", 400),
    ("/search?q=nothing", 404), ("/search?q=", 400), ("/nope", 404),
])
def test_bad_input_answers_with_a_page(chain, path, status):
    reply = chain["client"].get(path)
    assert reply.status_code == status
    if path != "/nope":
        assert 'id="error"' in reply.text


def test_pooled_transaction_is_listed_and_shown(chain):
    node, client = chain["node"], chain["client"]
    tx = make_transfer(BOB_SEED, node.genesis_hash, 2, 1, DAVE, 777)
    node.mempool.add(tx)
    try:
        txid = tx.txid().hex()
        assert f"/tx/{txid}" in client.get("/").text
        page = client.get(f"/tx/{txid}")
        assert page.status_code == 200 and "In the mempool" in page.text
    finally:
        node.mempool.reset(node.store.snapshot_state(), node.chain.height,
                           node.vdf_for(node.chain.tip.hash)[0], [], {tx.txid()}, None)


def test_metrics(chain):
    node, client = chain["node"], chain["client"]
    node.rpc_methods["getinfo"]()  # not timed: the explorer's table is the raw one
    timed = node.metrics.instrument(node.rpc_methods)
    timed["getinfo"]()
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    values = {m.group(1): float(m.group(2)) for m in
              re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", reply.text, re.M)}
    assert values["microcash_height"] == node.chain.height
    assert values["microcash_blocks_connected_total"] == node.chain.height
    assert values["microcash_block_connect_seconds_count"] == node.chain.height
    assert values["microcash_escrows_open"] == 2
    assert values["microcash_burned_units"] == node.rpc_methods["getinfo"]()["burned"] > 0
    assert values["microcash_mempool_transactions"] == 0
    assert values["microcash_peers"] == 0
    assert values['microcash_rpc_request_seconds_count{method="getinfo"}'] == 1
    assert values["microcash_reorgs_total"] == 0
    assert values["microcash_bans_total"] == 0


def test_two_nodes_do_not_share_a_registry(chain, tmp_path):
    other = Node(PARAMS, tmp_path / "other", workers=0)
    try:
        text = other.metrics.render().decode()
        assert "microcash_blocks_connected_total 0.0" in text
        assert other.http_port is None  # no explorer unless --http-port is given
    finally:
        other.store.close()
