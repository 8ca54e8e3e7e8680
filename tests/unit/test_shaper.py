"""The user-space link shaper: its delivery schedule and a real relay on loopback."""

import random
import time
from functools import partial

import pytest
import trio

from devnet.shaper import LinkShape, _Direction, parse_rate, serve


def test_schedule_keeps_order_and_adds_latency():
    direction = _Direction(LinkShape(latency=0.1, jitter=0.05), random.Random(1))
    dues = [direction.due(t * 0.001, 100) for t in range(200)]
    assert dues == sorted(dues)  # jitter never reorders a byte stream
    assert all(due >= t * 0.001 + 0.05 - 1e-9 for t, due in enumerate(dues))


def test_loss_costs_one_retransmission_timeout():
    shape = LinkShape(latency=0.1, loss=1.0)
    assert shape.retransmit_penalty() == pytest.approx(0.4)  # RTT 0.2 s + 200 ms
    assert _Direction(shape, random.Random(0)).due(0.0, 10) == pytest.approx(0.5)
    lossy = _Direction(LinkShape(latency=0.1, loss=0.01), random.Random(7))
    late = sum(lossy.due(i * 10.0, 1448) - i * 10.0 > 0.11 for i in range(2000))
    assert 5 < late < 40  # about 1 % of one-segment chunks


def test_rate_serialises_chunks():
    direction = _Direction(LinkShape(rate=8000), random.Random(0))  # 1000 bytes/s
    assert direction.due(0.0, 500) == pytest.approx(0.5)
    assert direction.due(0.0, 500) == pytest.approx(1.0)


@pytest.mark.parametrize("text, bits", [("10mbit", 10e6), ("512kbit", 512e3), ("1gbit", 1e9),
                                        ("100kbps", 800e3), ("2000", 2000.0), (None, 0.0)])
def test_parse_rate(text, bits):
    assert parse_rate(text) == bits


def test_parse_rate_rejects():
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_relay_delays_each_direction_on_loopback():
    """An echo through a 50 ms relay (non-transparent, no root) takes ≥ 100 ms."""
    async def main():
        async def echo(stream):
            async for data in stream:
                await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            echo_listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
            echo_port = echo_listeners[0].socket.getsockname()[1]
            port = await nursery.start(lambda task_status: serve(
                ("127.0.0.1", 0), ("127.0.0.1", echo_port), LinkShape(latency=0.05),
                transparent=False, task_status=task_status))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            began = time.monotonic()
            await stream.send_all(b"ping")
            assert await stream.receive_some(10) == b"ping"
            elapsed = time.monotonic() - began
            await stream.aclose()
            nursery.cancel_scope.cancel()
            return elapsed

    elapsed = trio.run(main)
    assert 0.1 <= elapsed < 1.0
