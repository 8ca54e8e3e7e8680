"""One atheris (libFuzzer) process for one target: ``python -m tests.fuzz.atheris_child NAME [libFuzzer args]``.

The target's modules are instrumented for coverage; exceptions in ``EXPECTED`` are
ignored, any other one is reported by libFuzzer as a crash (input saved by
``-artifact_prefix``). Half of the mutations are libFuzzer's byte mutations, half our
msgpack-structure-aware ones (``runner.MutationFuzzer``), so inputs get past the
canonical-encoding check and into the decoders' field checks.
"""

import sys

import atheris

with atheris.instrument_imports(include=["consensus", "node", "p2p", "wallet", "tests.fuzz"]):
    from tests.fuzz.runner import MutationFuzzer, discover

    NAME = sys.argv.pop(1)
    MODULE = discover([NAME])[NAME]


def test_one_input(data: bytes) -> None:
    try:
        MODULE.target(data)
    except MODULE.EXPECTED:
        pass


_STRUCTURED = MutationFuzzer(list(MODULE.SEEDS), 0)


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    if seed % 2:
        return atheris.Mutate(data, max_size)
    _STRUCTURED.rng.seed(seed)
    return _STRUCTURED.mutate(data)[:max_size]


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
