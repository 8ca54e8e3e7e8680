"""Pure parts of the wallet CLI: amounts, the escrow schedule, the wallet's records, and
picking a cheat proof (wallet/amounts.py, wallet/commands/schedule.py, wallet/walletdb.py,
wallet/commands/cheat.py)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.escrow import compute_t_draw, compute_t_expire
from consensus.keys import public_key
from consensus.params import COIN, get_params
from consensus.ticket import sign_ticket
from wallet.amounts import MAX_AMOUNT, format_amount, format_mcash, parse_amount, parse_units
from wallet.commands.cheat import find_proof
from wallet.customer.schedule import build_escrow_state, schedule_json, schedule_lines
from wallet.walletdb import EscrowRecord, WalletDB, WalletDBError

PAPER = get_params("paper")
REGTEST = get_params("regtest")
OWNER_SEED = bytes([7]) * 32
OWNER = public_key(OWNER_SEED)
M0, M1 = bytes([1]) * 32, bytes([2]) * 32
GENESIS = bytes([9]) * 32
EID = bytes([5]) * 32


# ---- amounts ------------------------------------------------------------------------

@pytest.mark.parametrize("text, units", [
    ("1", COIN), ("1.5", 150_000_000), (".5", 50_000_000), ("2.", 2 * COIN),
    ("0.00000001", 1), ("  3.25 ", 325_000_000), ("0", 0),
    ("150u", 150), ("150U", 150), ("7units", 7), ("1unit", 1), ("0u", 0),
    ("92233720368.54775807", MAX_AMOUNT), ("9223372036854775807u", MAX_AMOUNT),
])
def test_parse_amount(text, units):
    assert parse_amount(text) == units


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("   ", "empty"), ("-1", "not an amount"), ("+1", "not an amount"),
    ("1e3", "not an amount"), ("1,5", "not an amount"), ("1 000", "not an amount"),
    (".", "not an amount"), ("abc", "not an amount"), ("1.000000001", "9 decimal places"),
    ("1.5u", "whole number followed by 'u'"), ("u", "whole number followed by 'u'"),
    ("-5u", "whole number followed by 'u'"), ("9223372036854775808u", "too large"),
    ("92233720368.54775808", "too large"),
])
def test_invalid_parse_amount(text, why):
    with pytest.raises(ValueError, match=why):
        parse_amount(text)


def test_parse_units():
    assert parse_units("1000") == 1000
    assert parse_units("1000u") == 1000
    assert parse_units(" 5 ") == 5
    for bad in ("1.5", "-3", "abc", "", "1e3", "u", str(2**63)):
        with pytest.raises(ValueError):
            parse_units(bad)


def test_format_amount():
    assert format_mcash(0) == "0.0"
    assert format_mcash(1) == "0.00000001"
    assert format_mcash(150_000_000) == "1.5"
    assert format_mcash(COIN) == "1.0"
    assert format_mcash(-COIN // 2) == "-0.5"
    assert format_amount(150_000_000) == "1.5 MCASH (150000000 units)"


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_format_then_parse_round_trips(units):
    assert parse_amount(format_mcash(units)) == units
    assert parse_amount(f"{units}u") == units


# ---- schedule -----------------------------------------------------------------------

def paper_escrow(created_height, tkt_rate=1000, l_esc=3, draw_len=1, win=(1, 1000)):
    return build_escrow_state(PAPER, owner=OWNER, escrow_amount=10_000, penalty_amount=5,
                              win_num=win[0], win_den=win[1], beta=1, tkt_rate=tkt_rate,
                              draw_len=draw_len, l_esc=l_esc, merchants=[M0, M1],
                              created_height=created_height)


def test_schedule_paper_fig2_rounds():
    """Appendix A, Fig. 2: included at 10, confirm_depth 6 -> start 17."""
    escrow = paper_escrow(10)
    sched = schedule_json(PAPER, escrow, EID)
    assert sched["start"] == 17 and sched["last_round"] == 19
    assert sched["rounds"] == [{"round": 17, "seqno_lo": 0, "seqno_hi": 1000},
                               {"round": 18, "seqno_lo": 1000, "seqno_hi": 2000},
                               {"round": 19, "seqno_lo": 2000, "seqno_hi": 3000}]
    text = "\n".join(schedule_lines(PAPER, escrow, EID))
    assert "round 17: seqnos 0-999" in text
    assert "round 19: seqnos 2000-2999" in text
    assert "issuing rounds 17-19" in text
    assert f"escrow {EID.hex()}" in text


def test_schedule_paper_fig3_draw_group():
    """Appendix A, Fig. 3: draw_len 3, p = 1/300, first round 28 -> t_draw 40, 10 winners."""
    escrow = paper_escrow(21, draw_len=3, win=(1, 300))
    assert escrow.start == 28
    sched = schedule_json(PAPER, escrow, EID)
    assert sched["k"] == 10 and sched["draw_size"] == 3000
    assert sched["groups"] == [{"group": 0, "first_round": 28, "last_round": 30,
                                "seqno_lo": 0, "seqno_hi": 3000, "t_draw": 40,
                                "t_expire": 60}]
    assert sched["t_refund"] == 60 == escrow.t_refund
    text = "\n".join(schedule_lines(PAPER, escrow, EID))
    assert "group 0: rounds 28-30, seqnos 0-2999, t_draw 40 (drawn with block 41)" in text
    assert "k = 10 winners per draw of 3000 seqnos" in text
    assert "t_refund:   60" in text


def test_schedule_matches_consensus_functions_and_abbreviates():
    escrow = build_escrow_state(REGTEST, owner=OWNER, escrow_amount=40 * 4 * 10 // 2,
                                penalty_amount=1, win_num=1, win_den=2, beta=10, tkt_rate=4,
                                draw_len=2, l_esc=40, merchants=[M0], created_height=5)
    sched = schedule_json(REGTEST, escrow, None)
    assert sched["start"] == 8 and len(sched["rounds"]) == 40 and len(sched["groups"]) == 20
    for row in sched["groups"]:
        assert row["t_draw"] == compute_t_draw(REGTEST, escrow, row["group"])
        assert row["t_expire"] == compute_t_expire(REGTEST, escrow, row["group"])
    assert sched["t_refund"] == sched["groups"][-1]["t_expire"]
    lines = schedule_lines(REGTEST, escrow, None)
    rounds = [ln for ln in lines if ln.strip().startswith("round ")]
    assert [ln.split(":")[0].strip() for ln in rounds] == [
        "round 8", "round 9", "round 10", "round 11", "round 12", "round 46", "round 47"]
    assert "    ... 33 more ..." in lines
    assert "    ... 13 more ..." in lines  # 20 groups: 5 + gap + 2
    assert lines[0] == "escrow (id known once mined)"


# ---- wallet records -----------------------------------------------------------------

def record(txid="aa" * 32):
    return EscrowRecord(txid=txid, owner_key="cust", owner=OWNER.hex(),
                        merchants=[M0.hex()], chain="regtest", genesis_hash=GENESIS.hex(),
                        escrow_amount=80, penalty_amount=3, win_num=1, win_den=2, beta=10,
                        tkt_rate=4, draw_len=2, l_esc=4, fee=1000)


def test_walletdb_escrow_lifecycle(tmp_path):
    db = WalletDB(tmp_path / "w")
    assert db.escrows() == [] and db.pending_escrows() == []
    assert not (tmp_path / "w").exists()  # nothing written before the first change
    db.add_pending_escrow(record())
    assert [r.txid for r in db.pending_escrows()] == ["aa" * 32]
    confirmed = db.confirm_escrow("aa" * 32, "bb" * 32, "cc" * 32, 7, 10, 18)
    assert (confirmed.escrow_id, confirmed.created_height, confirmed.start,
            confirmed.t_refund) == ("bb" * 32, 7, 10, 18)
    assert db.pending_escrows() == []
    assert db.escrow("bb" * 32) == confirmed
    assert db.betas() == {"bb" * 32: 10}
    assert (tmp_path / "w" / "wallet.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(WalletDBError, match="no pending escrow"):
        db.confirm_escrow("aa" * 32, "bb" * 32, "cc" * 32, 7, 10, 18)
    db.add_pending_escrow(record("dd" * 32))
    db.drop_pending_escrow("dd" * 32)
    assert db.pending_escrows() == []


def test_walletdb_sent_records(tmp_path):
    db = WalletDB(tmp_path)
    db.record_sent("g1", "s1", 0, "t0", "TRANSFER")
    db.record_sent("g1", "s1", 1, "t1", "TRANSFER")
    db.record_sent("g2", "s1", 0, "t2", "TRANSFER")
    db.record_sent("g1", "s2", 0, "t3", "ESCROW_CREATE")
    assert db.sent_by("g1", "s1") == {0: "t0", 1: "t1"}
    db.forget_sent(["t0", "unknown"])
    assert db.sent_by("g1", "s1") == {1: "t1"}


def test_invalid_walletdb_file(tmp_path):
    (tmp_path / "wallet.json").write_text("{not json")
    with pytest.raises(WalletDBError, match="not valid JSON"):
        WalletDB(tmp_path).escrows()
    (tmp_path / "wallet.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(WalletDBError, match="not a version 1 wallet file"):
        WalletDB(tmp_path).escrows()
    (tmp_path / "wallet.json").write_text(json.dumps({"version": 1, "escrows": []}))
    with pytest.raises(WalletDBError, match="wrong type"):
        WalletDB(tmp_path).escrows()


# ---- cheat proof selection ----------------------------------------------------------

def test_find_proof_duplicate_and_out_of_range():
    escrow = build_escrow_state(REGTEST, owner=OWNER, escrow_amount=8, penalty_amount=1,
                                win_num=1, win_den=2, beta=1, tkt_rate=4, draw_len=2,
                                l_esc=4, merchants=[M0, M1], created_height=1)  # N = 16
    escrows = {EID: escrow}

    def tkt(index, seqno, seed=OWNER_SEED):
        return sign_ticket(seed, GENESIS, EID, index, seqno)

    a, b = tkt(0, 5), tkt(1, 5)
    assert find_proof([tkt(0, 1), a, tkt(0, 2), b], escrows, GENESIS) == (a, b)
    assert find_proof([a, tkt(0, 5)], escrows, GENESIS) is None  # same merchant: no proof
    oor = tkt(0, 16)
    assert find_proof([a, oor], escrows, GENESIS) == (oor, None)
    assert find_proof([tkt(0, 15)], escrows, GENESIS) is None  # seqno 15 < N
    forged = tkt(1, 5, seed=bytes([8]) * 32)
    assert find_proof([a, forged], escrows, GENESIS) is None  # not the owner's signature
    assert find_proof([a, b], {}, GENESIS) is None  # escrow unknown
