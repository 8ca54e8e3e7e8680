"""The customer's ticket issuer: SPEC §3.2 schedule, durable seqno high-water mark."""

import http.server
import json
import socket
import threading

import pytest

from consensus.escrow import EscrowState
from consensus.keys import generate_seed, public_key
from consensus.ticket import TICKET_SIZE, Ticket, verify_ticket_signature
from wallet.customer import issuer as issuer_mod
from wallet.customer.issuer import (IssueError, TicketIssuer, TicketSendError, read_tickets,
                                    send_tickets, write_tickets)

GENESIS = bytes(range(32))
ESCROW_ID = bytes([7]) * 32
OWNER_SEED = bytes([1]) * 32
MERCHANTS = (bytes([0xA0]) * 32, bytes([0xB0]) * 32)


def make_escrow(**changes) -> EscrowState:
    """tkt_rate 10, l_esc 4, start 13: rounds 13..16 carry seqnos 0..39."""
    fields = dict(owner=public_key(OWNER_SEED), escrow_balance=40, penalty_balance=100,
                  win_num=1, win_den=2, beta=2, tkt_rate=10, draw_len=2, l_esc=4,
                  merchants=MERCHANTS, created_height=10, start=13, t_refund=30, broken=False)
    fields.update(changes)
    return EscrowState(**fields)


def issue(issuer, count, rnd, escrow=None, merchant_index=0):
    return issuer.issue(OWNER_SEED, GENESIS, escrow or make_escrow(), ESCROW_ID,
                        merchant_index, count, rnd)


def test_issue_starts_at_round_range_and_signs(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        tickets = issue(iss, 3, 14, merchant_index=1)
    assert [t.seqno for t in tickets] == [10, 11, 12]
    owner = public_key(OWNER_SEED)
    for t in tickets:
        assert t.escrow_id == ESCROW_ID and t.merchant_index == 1
        assert verify_ticket_signature(t, owner, GENESIS)


def test_issue_continues_after_reopen_without_reuse(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        first = issue(iss, 4, 13)
    with TicketIssuer(tmp_path / "iss") as iss:
        second = issue(iss, 4, 13)
        assert iss.next_seqno(ESCROW_ID) == 8
    assert [t.seqno for t in first] == [0, 1, 2, 3]
    assert [t.seqno for t in second] == [4, 5, 6, 7]


def test_seqnos_shared_across_merchants(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        a = issue(iss, 2, 13, merchant_index=0)
        b = issue(iss, 2, 13, merchant_index=1)
    assert {t.seqno for t in a}.isdisjoint({t.seqno for t in b})


def test_round_boundary_issues_what_remains_then_refuses(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        assert len(issue(iss, 7, 13)) == 7
        rest = issue(iss, 7, 13)
        assert [t.seqno for t in rest] == [7, 8, 9]
        with pytest.raises(IssueError, match="wait for round 14"):
            issue(iss, 1, 13)
        assert [t.seqno for t in issue(iss, 2, 14)] == [10, 11]


def test_later_round_skips_unused_seqnos_and_never_goes_back(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        assert [t.seqno for t in issue(iss, 1, 15)] == [20]
        with pytest.raises(IssueError, match="already issued"):
            issue(iss, 1, 14)  # round 14's range lies below the high-water mark
        assert [t.seqno for t in issue(iss, 1, 16)] == [30]


def test_mark_is_durable_before_tickets_are_returned(tmp_path, monkeypatch):
    def crash(*args):
        raise RuntimeError("crash while signing")

    with TicketIssuer(tmp_path / "iss") as iss:
        monkeypatch.setattr(issuer_mod, "sign_ticket", crash)
        with pytest.raises(RuntimeError):
            issue(iss, 5, 13)
    monkeypatch.undo()
    with TicketIssuer(tmp_path / "iss") as iss:
        assert [t.seqno for t in issue(iss, 1, 13)] == [5]  # 0..4 skipped, never reused


@pytest.mark.parametrize("rnd,why", [(12, "not started"), (17, "has ended")])
def test_invalid_round_outside_issuing_rounds(tmp_path, rnd, why):
    with TicketIssuer(tmp_path / "iss") as iss, pytest.raises(IssueError, match=why):
        issue(iss, 1, rnd)


def test_invalid_broken_escrow(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss, pytest.raises(IssueError, match="broken"):
        issue(iss, 1, 13, escrow=make_escrow(broken=True))


def test_invalid_not_owner_and_bad_index_and_count(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        with pytest.raises(IssueError, match="owner"):
            iss.issue(generate_seed(), GENESIS, make_escrow(), ESCROW_ID, 0, 1, 13)
        with pytest.raises(IssueError, match="merchant index 2"):
            issue(iss, 1, 13, merchant_index=2)
        with pytest.raises(IssueError, match="at least 1"):
            issue(iss, 0, 13)
        assert iss.next_seqno(ESCROW_ID) == 0


def test_invalid_second_issuer_on_same_state(tmp_path):
    with TicketIssuer(tmp_path / "iss"):
        with pytest.raises(IssueError, match="in use"):
            TicketIssuer(tmp_path / "iss")


def test_write_and_read_tickets(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        tickets = issue(iss, 3, 13)
    path = tmp_path / "t.bin"
    write_tickets(path, tickets)
    assert path.stat().st_size == 3 * TICKET_SIZE
    assert read_tickets(path) == tickets
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="multiple"):
        read_tickets(path)


class ScriptedMerchant:
    """A real HTTP server on 127.0.0.1 answering each POST with ``answer(body)``:
    ``(status, JSON-ready object or raw bytes)``; the request bodies and headers are kept."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[tuple[str, dict, bytes]] = []
        merchant = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                merchant.requests.append((self.path, dict(self.headers), body))
                status, reply = merchant.answer(body)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_send_tickets_splits_batches_and_merges_indexes(tmp_path, monkeypatch):
    monkeypatch.setattr(issuer_mod, "MAX_TICKETS_PER_REQUEST", 3)

    def answer(body):
        n = len(body) // TICKET_SIZE
        return 200, {"accepted": n - 1, "rejected": [{"index": 0, "reason": "wrong-round"}]}

    with TicketIssuer(tmp_path / "iss") as iss:
        tickets = issue(iss, 7, 13)
    with ScriptedMerchant(answer) as merchant:
        result = send_tickets(merchant.url + "/", tickets)
    assert {path for path, _, _ in merchant.requests} == {"/v1/tickets"}
    assert {h["Content-Type"] for _, h, _ in merchant.requests} == {"application/octet-stream"}
    bodies = [body for _, _, body in merchant.requests]
    assert [len(b) // TICKET_SIZE for b in bodies] == [3, 3, 1]
    assert b"".join(bodies) == b"".join(t.encode() for t in tickets)
    assert result == {"accepted": 4, "rejected": [{"index": i, "reason": "wrong-round"}
                                                  for i in (0, 3, 6)]}


def test_invalid_send_tickets_http_error():
    ticket = Ticket(1, 0, ESCROW_ID, 0, bytes(64))
    with ScriptedMerchant(lambda body: (400, {"error": "bad body"})) as merchant:
        with pytest.raises(TicketSendError, match="HTTP 400: bad body"):
            send_tickets(merchant.url, [ticket])
    with ScriptedMerchant(lambda body: (503, b"<html>down</html>")) as merchant:
        with pytest.raises(TicketSendError, match="HTTP 503: <html>down</html>"):
            send_tickets(merchant.url, [ticket])
    garbage = (200, {"accepted": 1, "rejected": [{"index": 5}]})
    with ScriptedMerchant(lambda body: garbage) as merchant:
        with pytest.raises(TicketSendError, match="outside"):
            send_tickets(merchant.url, [ticket])


def test_invalid_send_tickets_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ticket = Ticket(1, 0, ESCROW_ID, 0, bytes(64))
    with pytest.raises(TicketSendError, match="cannot reach merchant"):
        send_tickets(f"http://127.0.0.1:{port}", [ticket])


def test_issue_chunks_reserves_each_chunk_only_when_asked(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        chunks = iss.issue_chunks(OWNER_SEED, GENESIS, make_escrow(), ESCROW_ID, 0, 8, 13,
                                  chunk=3)
        first = next(chunks)
        assert [t.seqno for t in first] == [0, 1, 2] and iss.next_seqno(ESCROW_ID) == 3
        assert [[t.seqno for t in c] for c in chunks] == [[3, 4, 5], [6, 7]]
        assert iss.next_seqno(ESCROW_ID) == 8
        # the round has 2 seqnos left: one short chunk, then the iteration ends
        rest = list(iss.issue_chunks(OWNER_SEED, GENESIS, make_escrow(), ESCROW_ID, 0, 5, 13,
                                     chunk=3))
        assert [[t.seqno for t in c] for c in rest] == [[8, 9]]
        with pytest.raises(IssueError, match="already issued"):
            next(iss.issue_chunks(OWNER_SEED, GENESIS, make_escrow(), ESCROW_ID, 0, 1, 13))


def test_abandoned_issue_costs_only_its_reserved_chunks(tmp_path):
    """A crash between chunks (here: the caller stops asking) leaves the round usable."""
    with TicketIssuer(tmp_path / "iss") as iss:
        chunks = iss.issue_chunks(OWNER_SEED, GENESIS, make_escrow(), ESCROW_ID, 0, 10, 13,
                                  chunk=2)
        next(chunks)
        next(chunks)
        del chunks
    with TicketIssuer(tmp_path / "iss") as iss:
        assert [t.seqno for t in issue(iss, 6, 13)] == [4, 5, 6, 7, 8, 9]


def test_pending_deliveries_are_recorded_with_the_reservation_and_resign_identically(tmp_path):
    with TicketIssuer(tmp_path / "iss") as iss:
        chunks = iss.issue_chunks(OWNER_SEED, GENESIS, make_escrow(), ESCROW_ID, 1, 5, 13,
                                  chunk=2, url="http://127.0.0.1:1")
        sent = [next(chunks), next(chunks)]
        pending = iss.pending(ESCROW_ID)
        assert [(p.first, p.last, p.merchant_index, p.url) for p in pending] == [
            (0, 2, 1, "http://127.0.0.1:1"), (2, 4, 1, "http://127.0.0.1:1")]
        assert [iss.resign(OWNER_SEED, GENESIS, p) for p in pending] == sent
        iss.delivered(ESCROW_ID, 0)
        assert [p.first for p in iss.pending(ESCROW_ID)] == [2]
        assert iss.pending(bytes(ESCROW_ID[0] ^ 1 for _ in range(32))) == []
    with TicketIssuer(tmp_path / "iss") as iss:  # durable across a reopen
        assert [p.first for p in iss.pending(ESCROW_ID)] == [2]
