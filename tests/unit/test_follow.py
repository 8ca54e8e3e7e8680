"""Escrow roll-over timing and the ``ticket issue --follow`` option checks (issue 8 point 7)."""

from click.testing import CliRunner

from consensus.escrow import compute_start
from consensus.params import get_params
from wallet.cli import cli
from wallet.customer.follow import next_create_height


def test_next_escrow_starts_in_time_even_if_mined_lead_blocks_late():
    params = get_params("regtest")
    for last_round in (20, 57):
        for lead in (0, 1, 3):
            t = next_create_height(last_round, params.confirm_depth, lead)
            assert compute_start(params, t + 1 + lead) == last_round + 1  # just in time
            assert compute_start(params, t + 1) == last_round + 1 - lead  # overlap of lead


def test_follow_option_checks(tmp_path):
    runner = CliRunner()
    base = ["--wallet-dir", str(tmp_path), "ticket", "issue", "k", "00" * 32,
            "--merchant-index", "0", "--count", "1"]
    out = runner.invoke(cli, base + ["--out", str(tmp_path / "x"), "--follow"])
    assert out.exit_code == 2 and "--follow sends each round's tickets" in out.output
    out = runner.invoke(cli, base + ["--to", "http://127.0.0.1:1", "--until-round", "5"])
    assert out.exit_code == 2 and "--until-round needs --follow" in out.output
