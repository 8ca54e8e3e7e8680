"""Node logging: text or JSON lines, rotation of node.log; sync progress wording."""

import json
import logging

import pytest
from click.testing import CliRunner

from node.chainstate import format_eta, format_progress
from node.logsetup import JsonFormatter, make_formatter, setup_logging
from node.main import cli


@pytest.fixture
def clean_root():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in saved:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_lines_and_rotation(tmp_path, clean_root):
    path = tmp_path / "node.log"
    setup_logging(path, "INFO", log_format="json", max_bytes=2_000, backups=2)
    log = logging.getLogger("node.test")
    for i in range(100):
        log.info("UpdateTip: height %d/%d", i, 100)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    for handler in clean_root.handlers:
        handler.flush()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
    assert all(p.stat().st_size <= 2_500 for p in tmp_path.iterdir())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    last = records[-1]
    assert last["level"] == "ERROR" and last["logger"] == "node.test" and last["msg"] == "failed"
    assert "ValueError: boom" in last["exc"] and last["ts"].endswith("Z")
    assert records[-2]["msg"] == "UpdateTip: height 99/100"


def test_text_format_is_the_old_one():
    record = logging.LogRecord("node", logging.INFO, __file__, 1, "up %d", (3,), None)
    line = make_formatter("text").format(record)
    assert line.endswith(" INFO node: up 3")
    assert json.loads(JsonFormatter().format(record))["msg"] == "up 3"
    with pytest.raises(ValueError):
        make_formatter("xml")


def test_progress_and_eta_wording():
    assert format_progress(50, 200) == "25.0%"
    assert format_progress(200, 200) == "100%"
    assert format_eta(0, 10.0) == "" and format_eta(100, 0.0) == ""
    assert format_eta(1000, 10.0) == ", 1000 to go, ETA 1m40s"
    assert format_eta(90_000, 10.0) == ", 90000 to go, ETA 2h30m"
    assert format_eta(5, 10.0) == ", 5 to go, ETA 1s"


def test_node_help_names_the_operator_options():
    out = CliRunner().invoke(cli, ["--help"]).output
    for option in ("--http-port", "--log-format", "--log-max-bytes", "--log-backups"):
        assert option in out
    bad = CliRunner().invoke(cli, ["--datadir", "x", "--log-format", "xml"])
    assert bad.exit_code == 2 and "xml" in bad.output


def test_update_tip_lines_say_progress_rate_and_eta(tmp_path, monkeypatch, caplog):
    import node.chainstate as chainstate
    from node.chainstate import ChainState
    from node.store import ChainStore
    from tests.unit.test_chainstate import PARAMS, block_on

    chain = ChainState(PARAMS, ChainStore(tmp_path / "s"))
    clock = [1000.0]

    class FakeTime:
        @staticmethod
        def monotonic():
            clock[0] += 2.5  # every connect is 2.5 s after the previous one
            return clock[0]

        perf_counter = staticmethod(lambda: 0.0)

    monkeypatch.setattr(chainstate, "time", FakeTime)
    monkeypatch.setattr(chain, "best_header_height", lambda: 100)
    chain._progress_at = clock[0]  # start-up, on the fake clock
    parent = chain.genesis.header
    with caplog.at_level(logging.INFO, logger="node.chain"):
        for _ in range(2):
            block = block_on(parent)
            chain.add_block(block.encode())
            parent = block.header
    chain.store.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("UpdateTip")]
    assert lines[-1].startswith("UpdateTip: height 2/100 (2.0%) best ")
    assert lines[-1].endswith("(0.4 blocks/s, 98 to go, ETA 4m05s)")
