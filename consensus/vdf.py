"""The iterated-hash VDF with checkpoints (SPEC §5, paper §4.3).

``x_0 = H(b"vdf", block_hash)``, ``x_{i+1} = blake3(x_i)``, ``vdf = x_T``. The child block
carries ``vdf`` and the ``C - 1`` checkpoints ``x_{T/C}, ..., x_{(C-1)T/C}``, so a validator
can check the ``C`` segments independently.
"""

from blake3 import blake3

from consensus.errors import ConsensusError
from consensus.hashing import tagged_hash


def iterate_hash(x: bytes, n: int) -> bytes:
    """Apply plain blake3 ``n`` times to the 32-byte ``x``."""
    for _ in range(n):
        x = blake3(x).digest()
    return x


def compute_vdf(block_hash: bytes, iterations: int, checkpoints: int) -> tuple[bytes, list[bytes]]:
    """``(vdf, checkpoints)`` of ``block_hash`` with T = ``iterations``, C = ``checkpoints``.

    CPU cost: T blake3 calls (about 1 µs each). Raises ``ValueError`` if C does not divide T.
    """
    if checkpoints < 1 or iterations % checkpoints:
        raise ValueError("vdf_checkpoints must divide vdf_iterations")
    seg = iterations // checkpoints
    x = tagged_hash(b"vdf", block_hash)
    points = []
    for _ in range(checkpoints):
        x = iterate_hash(x, seg)
        points.append(x)
    return points[-1], points[:-1]


def vdf_segments(block_hash: bytes, vdf: bytes, checkpoints: list[bytes],
                 iterations: int, num_checkpoints: int) -> list[tuple[str, bytes, int, bytes]]:
    """The ``C`` independent segments ``("vdf", begin, steps, end)`` to check (SPEC §5);
    each holds when ``iterate_hash(begin, steps) == end``. Such tuples are also what a
    caller puts in ``verify_vdf``'s ``verified`` container once it checked them."""
    seg = iterations // num_checkpoints
    starts = [tagged_hash(b"vdf", block_hash)] + list(checkpoints)
    ends = list(checkpoints) + [vdf]
    return [("vdf", begin, seg, end) for begin, end in zip(starts, ends)]


def is_segment_valid(segment: tuple[str, bytes, int, bytes]) -> bool:
    """Whether one ``vdf_segments`` item holds (``steps`` blake3 calls)."""
    _, begin, steps, end = segment
    return iterate_hash(begin, steps) == end


def verify_vdf(block_hash: bytes, vdf: bytes, checkpoints: list[bytes], iterations: int,
               num_checkpoints: int, verified=frozenset()) -> None:
    """Check ``vdf`` and its checkpoints for ``block_hash``; raises ``ConsensusError``
    (``bad-vdf``). Segments found in ``verified`` (already checked, e.g. in parallel by
    worker processes) are not recomputed; the order and reasons stay the same."""
    if len(checkpoints) != num_checkpoints - 1:
        raise ConsensusError("bad-vdf", "wrong number of checkpoints")
    for i, segment in enumerate(vdf_segments(block_hash, vdf, checkpoints, iterations,
                                             num_checkpoints)):
        if segment not in verified and not is_segment_valid(segment):
            raise ConsensusError("bad-vdf", f"segment {i} does not match")
