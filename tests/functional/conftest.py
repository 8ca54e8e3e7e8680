"""pytest wiring of the functional framework: the ``nodes_factory`` fixture.

``nodes_factory`` yields a ``framework.NodeGroup`` rooted in the test's ``tmp_path``
with a fresh regtest genesis; every node started through it is killed at teardown,
whether the test passed or not. When a test fails, the tail of each node's logs is
attached to the failure report as a "node logs" section.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.functional.framework import NodeGroup

_GROUP_KEY = pytest.StashKey[NodeGroup]()


@pytest.fixture
def nodes_factory(request: pytest.FixtureRequest, tmp_path) -> Iterator[NodeGroup]:
    """A NodeGroup for this test; all its node processes are killed at teardown."""
    group = NodeGroup(tmp_path)
    request.node.stash[_GROUP_KEY] = group
    try:
        yield group
    finally:
        group.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On a failed setup or call, add the nodes' log tails to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and report.failed:
        group = item.stash.get(_GROUP_KEY, None)
        if group is not None and group.nodes:
            report.sections.append(("node logs", group.log_tails(60)))
