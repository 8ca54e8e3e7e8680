"""--rpc-allow-ip and --externalip parsing, and the RPC's client check."""

import click
import pytest

from node.main import _parse_externalip
from node.rpc import LOOPBACK_ONLY, client_allowed, parse_allow_ip


def test_loopback_only_is_the_default():
    assert client_allowed(("127.0.0.1", 5000), LOOPBACK_ONLY)
    assert client_allowed(("127.4.5.6", 5000), LOOPBACK_ONLY)
    assert client_allowed(("::1", 5000), LOOPBACK_ONLY)
    assert not client_allowed(("10.0.0.1", 5000), LOOPBACK_ONLY)
    assert not client_allowed(None, LOOPBACK_ONLY)  # a UNIX socket has no address


def test_allow_ip_networks_and_mapped_addresses():
    allowed = (parse_allow_ip("10.1.2.0/24"), parse_allow_ip("fd00::/8"), parse_allow_ip("192.0.2.7"))
    assert client_allowed(("10.1.2.200", 1), allowed)
    assert client_allowed(("::ffff:10.1.2.3", 1), allowed)  # dual-stack :: listener
    assert client_allowed(("fd12::1", 1), allowed)
    assert client_allowed(("192.0.2.7", 1), allowed)
    assert not client_allowed(("192.0.2.8", 1), allowed)
    assert not client_allowed(("127.0.0.1", 1), allowed)  # given networks replace loopback
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_allow_ip("localhost")


@pytest.mark.parametrize("text, expected", [
    ("203.0.113.5", ("203.0.113.5", 0)),
    ("203.0.113.5:8444", ("203.0.113.5", 8444)),
    ("[2001:db8::1]:8444", ("2001:db8::1", 8444)),
    ("2001:db8::1", ("2001:db8::1", 0)),
    (None, None),
])
def test_externalip_forms(text, expected):
    assert _parse_externalip(text) == expected


@pytest.mark.parametrize("text", ["node.example", "1.2.3.4:99999", "[::1]:x"])
def test_externalip_rejects(text):
    with pytest.raises(click.BadParameter):
        _parse_externalip(text)
