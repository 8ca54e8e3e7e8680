"""One atheris (libFuzzer) process for one target: ``python -m tests.fuzz.atheris_child NAME [libFuzzer args]``.

The target's modules are instrumented for coverage; exceptions in ``EXPECTED`` are
ignored, any other one is reported by libFuzzer as a crash (input saved by
``-artifact_prefix``).
"""

import sys

import atheris

with atheris.instrument_imports(include=["consensus", "node", "p2p", "wallet", "tests.fuzz"]):
    from tests.fuzz.runner import discover

    NAME = sys.argv.pop(1)
    MODULE = discover([NAME])[NAME]


def test_one_input(data: bytes) -> None:
    try:
        MODULE.target(data)
    except MODULE.EXPECTED:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
