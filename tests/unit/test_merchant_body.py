"""The merchant's POST /v1/tickets body parser and Content-Type check (SPEC §4, §13),
through the fuzz target of tests/fuzz/ on hypothesis-made inputs."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.ticket import TICKET_SIZE
from tests.fuzz.fuzz_merchant_body import EXPECTED, SEEDS, target
from wallet.merchant.service import (MAX_TICKETS_PER_REQUEST, RequestError, check_content_type,
                                     parse_ticket_body)

records = st.one_of(st.binary(min_size=TICKET_SIZE, max_size=TICKET_SIZE),
                    st.sampled_from([s for s in SEEDS if len(s) == TICKET_SIZE]))


def run_target(data: bytes) -> None:
    try:
        target(data)
    except EXPECTED:
        pass


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_seeds_are_valid_bodies(seed):
    target(seed)  # no exception at all, as the fuzz runner requires of seeds


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=12).map(b"".join) | st.binary(max_size=600))
def test_fuzz_merchant_body(data):
    run_target(data)


def test_invalid_body_limits():
    with pytest.raises(RequestError) as info:
        parse_ticket_body(bytes(TICKET_SIZE + 1))
    assert info.value.status == 400
    with pytest.raises(RequestError) as info:
        parse_ticket_body(SEEDS[1] * (MAX_TICKETS_PER_REQUEST + 1))
    assert info.value.status == 413
    assert len(parse_ticket_body(SEEDS[1] * MAX_TICKETS_PER_REQUEST)) == MAX_TICKETS_PER_REQUEST


@pytest.mark.parametrize("value", [None, "", "application/json", "text/plain",
                                   "application/octet-streamx", "multipart/form-data"])
def test_invalid_content_type(value):
    with pytest.raises(RequestError) as info:
        check_content_type(value)
    assert info.value.status == 415


def test_content_type_parameters_and_case_ignored():
    check_content_type("application/octet-stream")
    check_content_type(" Application/Octet-Stream ; charset=binary")
