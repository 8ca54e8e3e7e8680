"""Fuzz runner: discovers ``tests/fuzz/fuzz_<name>.py`` targets and feeds them inputs.

Target contract (every module ``tests/fuzz/fuzz_<name>.py``):

- ``EXPECTED: tuple[type[BaseException], ...]`` — the exception types the decoder is
  documented to raise for bad input; any other exception is a finding;
- ``SEEDS: list[bytes]`` — valid inputs the mutations start from;
- ``def target(data: bytes) -> None`` — decode ``data`` (and check what must hold).

Two engines: ``MutationFuzzer`` (ours: deterministic for a given seed, byte-level and
msgpack-structure-aware mutations of the seeds, used by ``make test`` through
tests/fuzz/test_fuzz.py) and atheris (coverage-guided, used by ``make fuzz`` when it
is installed — the optional ``fuzz`` extra; otherwise ``make fuzz`` uses ours). A
crashing input is saved to ``tests/fuzz/crashes/<name>-<sha256 prefix>.bin``.
"""

from __future__ import annotations

import hashlib
import importlib
import random
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import msgpack

FUZZ_DIR = Path(__file__).resolve().parent
CRASH_DIR = FUZZ_DIR / "crashes"

_INTERESTING_INTS = [0, 1, -1, 2, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32 - 1, 2**32,
                     2**53, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
_INTERESTING_BYTES = [0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xCA, 0xCB, 0xCC, 0xCF,
                      0xD0, 0xD3, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x90, 0x9F, 0xFF]


def discover(names: list[str] | None = None) -> dict[str, ModuleType]:
    """``{name: module}`` of every ``fuzz_<name>.py`` here (or only ``names``), sorted."""
    found = {}
    for path in sorted(FUZZ_DIR.glob("fuzz_*.py")):
        name = path.stem[len("fuzz_"):]
        if names and name not in names:
            continue
        module = importlib.import_module(f"tests.fuzz.{path.stem}")
        for attr in ("EXPECTED", "SEEDS", "target"):
            if not hasattr(module, attr):
                raise TypeError(f"{path.name} lacks {attr} (see tests/fuzz/runner.py)")
        found[name] = module
    if names:
        missing = set(names) - set(found)
        if missing:
            raise ValueError(f"no fuzz target named {', '.join(sorted(missing))}")
    return found


@dataclass
class Finding:
    """An undeclared exception: the input, where it was saved, the traceback."""

    target: str
    data: bytes
    path: Path
    error: str


def save_crash(name: str, data: bytes) -> Path:
    """Write a crashing input to ``tests/fuzz/crashes/`` and return its path."""
    CRASH_DIR.mkdir(exist_ok=True)
    path = CRASH_DIR / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def run_one(name: str, module: ModuleType, data: bytes) -> Finding | None:
    """Run one input; a ``Finding`` if it raised anything but ``EXPECTED``."""
    try:
        module.target(data)
    except module.EXPECTED:
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: B036 - every undeclared exception is a finding
        return Finding(name, data, save_crash(name, data), traceback.format_exc())
    return None


class MutationFuzzer:
    """Deterministic mutation fuzzer over a target's seeds (``random.Random(seed)``)."""

    def __init__(self, seeds: list[bytes], rng_seed: int = 0) -> None:
        self.seeds = [bytes(s) for s in seeds] or [b""]
        self.rng = random.Random(rng_seed)
        self.corpus = list(self.seeds)

    def inputs(self, count: int):
        """Yield ``count`` inputs: the seeds first, then mutations."""
        for i in range(count):
            if i < len(self.seeds):
                yield self.seeds[i]
                continue
            base = self.rng.choice(self.corpus)
            data = self.mutate(base)
            if len(self.corpus) < 512 and self.rng.random() < 0.05:
                self.corpus.append(data)  # keep some mutants to mutate further
            yield data

    def mutate(self, data: bytes) -> bytes:
        """One to four stacked mutations, structural (msgpack) or byte-level."""
        for _ in range(self.rng.randint(1, 4)):
            if self.rng.random() < 0.5:
                data = self._mutate_structure(data)
            else:
                data = self._mutate_bytes(data)
        return data[:1 << 20]

    # -- byte level --------------------------------------------------------------------
    def _mutate_bytes(self, data: bytes) -> bytes:
        rng, buf = self.rng, bytearray(data)
        choice = rng.randrange(8)
        if choice == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:  # set an interesting byte
            buf[rng.randrange(len(buf))] = rng.choice(_INTERESTING_BYTES)
        elif choice == 2:  # insert random bytes
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3 and buf:  # delete a range
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randint(1, 16)]
        elif choice == 4 and buf:  # truncate
            del buf[rng.randrange(len(buf)):]
        elif choice == 5:  # splice with another seed
            other = rng.choice(self.corpus)
            i, j = rng.randrange(len(buf) + 1), rng.randrange(len(other) + 1)
            buf = buf[:i] + other[j:]
        elif choice == 6 and buf:  # duplicate a range
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i:i + rng.randint(1, 32)]
        else:  # random tail
            buf += rng.randbytes(rng.randint(1, 4))
        return bytes(buf)

    # -- msgpack structure -------------------------------------------------------------
    def _mutate_structure(self, data: bytes) -> bytes:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:
            return self._mutate_bytes(data)
        obj = self._mutate_obj(obj, depth=0)
        try:
            return msgpack.packb(obj, use_bin_type=True)
        except Exception:
            return data

    def _mutate_obj(self, obj: Any, depth: int) -> Any:
        rng = self.rng
        if isinstance(obj, list) and obj and depth < 8 and rng.random() < 0.75:
            i = rng.randrange(len(obj))
            obj[i] = self._mutate_obj(obj[i], depth + 1)
            return obj
        if isinstance(obj, dict) and obj and depth < 8 and rng.random() < 0.75:
            key = rng.choice(list(obj))
            obj[key] = self._mutate_obj(obj[key], depth + 1)
            return obj
        return self._replace(obj)

    def _replace(self, obj: Any) -> Any:
        rng = self.rng
        choice = rng.randrange(10)
        if choice == 0:
            return rng.choice(_INTERESTING_INTS)
        if choice == 1 and isinstance(obj, int) and not isinstance(obj, bool):
            return obj + rng.choice([-1, 1, -(2**32), 2**32])
        if choice == 2 and isinstance(obj, (bytes, str)):  # resize
            n = rng.choice([0, 1, 31, 32, 33, 63, 64, 65, 106, 107, 108, len(obj) + 1])
            return (obj * (n // max(1, len(obj)) + 1))[:n] if obj else rng.randbytes(n)
        if choice == 3 and isinstance(obj, list):
            if obj and rng.random() < 0.5:
                del obj[rng.randrange(len(obj))]
            else:
                obj.insert(rng.randrange(len(obj) + 1), rng.choice(obj) if obj else 0)
            return obj
        if choice == 4 and isinstance(obj, list) and obj:
            return obj * rng.randint(2, 40)
        pool: list[Callable[[], Any]] = [
            lambda: None, lambda: True, lambda: False, lambda: 1.5, lambda: "x",
            lambda: rng.randbytes(rng.choice([0, 32, 64])), lambda: [], lambda: {},
            lambda: [obj], lambda: {"k": obj}, lambda: -rng.randrange(2**63),
        ]
        return rng.choice(pool)()


def fuzz_target(name: str, module: ModuleType, count: int, rng_seed: int = 0,
                stop_on_finding: bool = True) -> tuple[int, list[Finding]]:
    """Run ``count`` inputs of our mutation fuzzer; ``(inputs run, findings)``."""
    fuzzer = MutationFuzzer(list(module.SEEDS), rng_seed)
    findings: list[Finding] = []
    done = 0
    for data in fuzzer.inputs(count):
        done += 1
        finding = run_one(name, module, data)
        if finding is not None:
            findings.append(finding)
            if stop_on_finding:
                break
    return done, findings
