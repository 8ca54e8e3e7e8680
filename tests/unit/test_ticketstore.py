"""The merchant's durable ticket store (SPEC §4.1 step 3, §13)."""

import pytest

from wallet.merchant.ticketstore import (EVIDENCE_OUT_OF_RANGE, EXPIRED, FAILED, HELD, LOSING,
                                         REDEEMED, WINNING, NewTicket, PendingRedeem,
                                         StoreError, TicketStore)

EID = bytes([3]) * 32
OTHER = bytes([4]) * 32


def new(seqno, eid=EID, group=None):
    group = seqno // 20 if group is None else group
    return NewTicket(escrow_id=eid, seqno=seqno, merchant_index=1, round=13 + seqno // 10,
                     group=group, t_draw=17 + 2 * group, t_expire=23 + 2 * group,
                     ticket=bytes([seqno % 256]) * 107)


def test_add_and_read_back_after_reopen(tmp_path):
    with TicketStore(tmp_path / "s") as store:
        store.add_tickets([new(0), new(1), new(25)])
        store.add_tickets([new(2, eid=OTHER)])
    with TicketStore(tmp_path / "s") as store:
        assert store.contains(EID, 1) and not store.contains(EID, 2)
        got = store.get(EID, 25)
        assert (got.merchant_index, got.round, got.group, got.status, got.txid) == \
            (1, 15, 1, HELD, None)
        assert got.ticket == bytes([25]) * 107
        assert store.summary(EID)["held"] == 3
        assert store.summaries()[OTHER]["held"] == 1
        assert [(g.escrow_id, g.group, g.t_draw, g.t_expire) for g in store.open_groups()] == \
            [(EID, 0, 17, 23), (EID, 1, 19, 25), (OTHER, 0, 17, 23)]
        assert [t.seqno for t in store.open_tickets(EID, 0)] == [0, 1]
        assert [t.seqno for t in store.tickets(EID)] == [0, 1, 25]


def test_invalid_duplicate_batch_writes_nothing(tmp_path):
    with TicketStore(tmp_path / "s") as store:
        store.add_tickets([new(0)])
        with pytest.raises(ValueError, match="already stored"):
            store.add_tickets([new(5), new(0)])
        with pytest.raises(ValueError, match="already stored"):
            store.add_tickets([new(6), new(6)])
        assert not store.contains(EID, 5) and not store.contains(EID, 6)
        assert store.summary(EID)["held"] == 1


def test_status_changes_keep_counts_and_open_index(tmp_path):
    with TicketStore(tmp_path / "s") as store:
        store.add_tickets([new(s) for s in range(4)])
        store.set_status([(EID, 0, WINNING, ""), (EID, 1, LOSING, ""), (EID, 2, WINNING, ""),
                          (EID, 2, FAILED, "ticket-not-winning"), (EID, 99, LOSING, "")])
        counts = store.summary(EID)
        assert (counts["held"], counts["winning"], counts["losing"], counts["failed"]) == \
            (1, 1, 1, 1)
        assert store.get(EID, 2).reason == "ticket-not-winning"
        assert [(t.seqno, t.status) for t in store.open_tickets(EID, 0)] == \
            [(0, WINNING), (3, HELD)]
        with pytest.raises(ValueError, match="unknown ticket status"):
            store.set_status([(EID, 3, "paid", "")])
        assert store.get(EID, 3).status == HELD  # the failed batch wrote nothing


def test_redeem_in_flight_attach_and_finish(tmp_path):
    txid = bytes([9]) * 32
    with TicketStore(tmp_path / "s") as store:
        store.add_tickets([new(s) for s in range(3)])
        store.set_status([(EID, s, WINNING, "") for s in range(3)])
        store.attach_redeem(PendingRedeem(txid, EID, 0, (0, 1, 2), 18))
    with TicketStore(tmp_path / "s") as store:
        [pending] = store.pending_redeems(EID, 0)
        assert pending == PendingRedeem(txid, EID, 0, (0, 1, 2), 18)
        assert store.get(EID, 1).txid == txid
        store.finish_redeem(txid, [(EID, 0, REDEEMED, ""), (EID, 2, EXPIRED, "late")])
        assert store.pending_redeems() == []
        assert store.get(EID, 0).status == REDEEMED and store.get(EID, 0).txid is None
        assert store.get(EID, 1).status == WINNING and store.get(EID, 1).txid is None
        counts = store.summary(EID)
        assert (counts["winning"], counts["redeemed"], counts["expired"]) == (1, 1, 1)
        assert [t.seqno for t in store.open_tickets(EID, 0)] == [1]


def test_drop_group(tmp_path):
    with TicketStore(tmp_path / "s") as store:
        store.add_tickets([new(0), new(20)])
        store.drop_group(EID, 0)
        assert [g.group for g in store.open_groups()] == [1]


def test_evidence_kept_once(tmp_path):
    with TicketStore(tmp_path / "s") as store:
        assert store.add_evidence(EVIDENCE_OUT_OF_RANGE, EID, 70, [b"x" * 107], "seqno >= N")
        assert not store.add_evidence(EVIDENCE_OUT_OF_RANGE, EID, 70, [b"y" * 107])
    with TicketStore(tmp_path / "s") as store:
        [ev] = store.evidence()
        assert (ev.kind, ev.escrow_id, ev.seqno, ev.tickets, ev.note) == \
            (EVIDENCE_OUT_OF_RANGE, EID, 70, (b"x" * 107,), "seqno >= N")
        assert store.summary(EID)["evidence"] == 1


def test_invalid_store_in_use(tmp_path):
    with TicketStore(tmp_path / "s"):
        with pytest.raises(StoreError, match="cannot open"):
            TicketStore(tmp_path / "s")


def test_stored_among_dense_and_sparse(tmp_path):
    with TicketStore(tmp_path / "s") as store:
        store.add_tickets([new(s) for s in (3, 4, 9)] + [new(5, eid=OTHER)])
        assert store.stored_among(EID, list(range(2, 12))) == {3, 4, 9}  # one range scan
        assert store.stored_among(EID, [4, 10**6]) == {4}  # sparse: one lookup each
        assert store.stored_among(EID, [5]) == set() and store.stored_among(EID, []) == set()
        assert store.stored_among(OTHER, [4, 5, 6]) == {5}
