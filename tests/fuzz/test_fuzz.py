"""Each fuzz target briefly, deterministically (``make test``); ``make fuzz`` runs them at length."""

import pytest

from tests.fuzz.runner import discover, fuzz_target

BRIEF_INPUTS = 3_000
TARGETS = discover()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_briefly(name):
    module = TARGETS[name]
    for seed in module.SEEDS:  # seeds are mostly valid; none may raise an undeclared error
        try:
            module.target(seed)
        except module.EXPECTED:
            pass
    runs, findings = fuzz_target(name, module, BRIEF_INPUTS, rng_seed=0)
    assert not findings, f"{name}: undeclared exception, input saved to {findings[0].path}\n{findings[0].error}"
    assert runs == BRIEF_INPUTS
