"""The merchant service's /metrics: accepted, rejected by reason, store counts, sends."""

import re

import httpx
import trio

from consensus.keys import public_key
from consensus.tx import make_cheat_proof, make_redeem
from tests.unit.test_merchant_service import (MERCHANT, OCTETS, FakeChain, body,
                                              tickets)
from wallet.merchant.metrics import MerchantMetrics
from wallet.merchant.service import MerchantService
from wallet.merchant.ticketstore import TicketStore

GENESIS = bytes([0x42]) * 32


def _values(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def test_metrics_count_accepted_rejected_and_held(tmp_path):
    with TicketStore(tmp_path / "store") as store:
        service = MerchantService(public_key(MERCHANT), store, FakeChain())

        async def main():
            async with trio.open_nursery() as nursery:
                port = await nursery.start(service.serve, "127.0.0.1", 0)
                url = f"http://127.0.0.1:{port}"

                def calls():
                    payload = body(tickets([10, 11, 12]) + tickets([40]) + tickets([10]))
                    httpx.post(url + "/v1/tickets", content=payload, headers=OCTETS)
                    return httpx.get(url + "/metrics")

                reply = await trio.to_thread.run_sync(calls)
                nursery.cancel_scope.cancel()
            return reply

        reply = trio.run(main)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    values = _values(reply.text)
    assert values["merchant_tickets_accepted_total"] == 3
    assert values['merchant_tickets_rejected_total{reason="wrong-round"}'] == 1
    assert values['merchant_tickets_rejected_total{reason="duplicate-ticket"}'] == 1
    assert values['merchant_tickets{state="held"}'] == 3
    assert values['merchant_tickets{state="redeemed"}'] == 0


def test_count_sends_counts_redeems_and_cheat_proofs():
    chain = FakeChain()
    metrics = MerchantMetrics()
    send = metrics.count_sends(chain.send_raw_transaction)
    owner_tickets = tickets([0, 1])
    redeem = make_redeem(bytes([2]) * 32, GENESIS, 0, owner_tickets[:1])
    other = tickets([0], merchant_index=0)[0]
    proof = make_cheat_proof(bytes([2]) * 32, GENESIS, 0, owner_tickets[0], other)
    trio.run(send, redeem.encode())
    trio.run(send, proof.encode())
    values = _values(metrics.render().decode())
    assert values['merchant_transactions_sent_total{kind="REDEEM"}'] == 1
    assert values['merchant_transactions_sent_total{kind="CHEAT_PROOF"}'] == 1
    assert values["merchant_cheat_proofs_sent_total"] == 1
