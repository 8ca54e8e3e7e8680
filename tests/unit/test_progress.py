"""devnet.progress: plain lines off a terminal, rich bars on one."""

import io

from devnet import progress as progress_mod
from devnet.progress import Progress, is_interactive


def test_plain_lines_start_throttle_and_end(monkeypatch):
    lines: list[str] = []
    p = Progress(interactive=False, say=lines.append)
    monkeypatch.setattr(progress_mod, "PLAIN_INTERVAL", 0.0)
    with p.task("warm-up", 4, unit="blocks") as task:
        task.update(2)
        p.say("a message")
        task.update(9)  # clamped to the total
    assert lines == ["warm-up: 0/4 blocks (0%)", "warm-up: 2/4 blocks (50%)", "a message",
                     "warm-up: 4/4 blocks (100%) done"]


def test_plain_lines_are_throttled():
    lines: list[str] = []
    p = Progress(interactive=False, say=lines.append)
    with p.task("rounds", 100) as task:
        for i in range(100):
            task.advance()
    assert len(lines) == 2 and lines[-1].endswith("done")


def test_stopped_task_says_so():
    lines: list[str] = []
    with Progress(interactive=False, say=lines.append).task("x", 3, start=1) as task:
        assert task.completed == 1
    assert lines[-1] == "x: 1/3 (33%) stopped"


def test_rich_bar_on_a_terminal():
    stream = io.StringIO()
    p = Progress(interactive=True, stream=stream)
    with p.task("draws", 2, unit="draws") as task:
        p.say("draw 0 at block 9")
        task.advance()
        task.advance()
    out = stream.getvalue()
    assert "draws" in out and "2/2" in out and "draw 0 at block 9" in out


def test_not_interactive_in_ci_or_pipes(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not is_interactive(io.StringIO())
    monkeypatch.delenv("CI")
    assert not is_interactive(io.StringIO())  # not a TTY


def test_demo_hold_ends_on_sigterm_or_timeout():
    import os
    import signal
    import threading
    import time

    from devnet.demo import _hold

    started = time.monotonic()
    _hold(0.2)
    assert time.monotonic() - started < 2
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    _hold(30)
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is before
