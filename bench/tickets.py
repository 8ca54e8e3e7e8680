"""Ticket issue/check rates against raw libsodium, and MicroCash vs MICROPAY (SPEC §14).

Figures (operations per second):
- issue: ``sign_ticket`` vs raw ``crypto_sign`` of a 79-byte message;
- merchant check: MicroCash (one signature + winner-set lookup) vs raw
  ``crypto_sign_verify_detached``, and vs a MICROPAY check (two signatures + bit test,
  Pass & shelat §3.3);
- VDF: iterations per second vs raw blake3 of 32 bytes.
"""

import hashlib
import os
import time
from typing import Callable

from blake3 import blake3
from nacl.bindings import crypto_sign, crypto_sign_keypair, crypto_sign_open


def crypto_sign_verify_detached(sig: bytes, msg: bytes, pk: bytes) -> bool:
    """The lowest-level Ed25519 check PyNaCl exposes (libsodium ``crypto_sign_open``, the
    call ``VerifyKey.verify`` makes); the reference for our ticket check."""
    crypto_sign_open(sig + msg, pk)
    return True

from consensus import keys
from consensus.lottery import compute_winners
from consensus.ticket import sign_ticket, verify_ticket_signature
from consensus.vdf import iterate_hash


def rate(fn: Callable[[int], None], seconds: float) -> float:
    """Calls of ``fn(i)`` per second over about ``seconds``."""
    n, start = 0, time.perf_counter()
    while True:
        for i in range(n, n + 200):
            fn(i)
        n += 200
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def report(name: str, figure: float, ref_name: str, reference: float) -> None:
    """One line: figure, reference, ratio."""
    print(f"{name:<38} {figure:>12,.0f}/s   {ref_name:<30} {reference:>12,.0f}/s   "
          f"ratio {figure / reference:5.2f}")


def bench_issue(seconds: float) -> None:
    seed, genesis, escrow_id = os.urandom(32), os.urandom(32), os.urandom(32)
    pk, sk = crypto_sign_keypair()
    message = os.urandom(79)
    figure = rate(lambda i: sign_ticket(seed, genesis, escrow_id, 0, i), seconds)
    reference = rate(lambda i: crypto_sign(message, sk), seconds)
    report("issue: sign_ticket", figure, "libsodium crypto_sign", reference)


def bench_check(seconds: float) -> None:
    seed, genesis, escrow_id = os.urandom(32), os.urandom(32), os.urandom(32)
    owner = keys.public_key(seed)
    tickets = [sign_ticket(seed, genesis, escrow_id, 0, s) for s in range(1000)]
    winners = frozenset(compute_winners(os.urandom(32), escrow_id, 0, 1000, 10))

    def microcash(i: int) -> None:
        t = tickets[i % 1000]
        if verify_ticket_signature(t, owner, genesis):
            _ = t.seqno in winners

    pk, sk = crypto_sign_keypair()
    msg = os.urandom(79)
    sig = crypto_sign(msg, sk)[:64]
    reference = rate(lambda i: crypto_sign_verify_detached(sig, msg, pk), seconds)
    report("check: MicroCash ticket", rate(microcash, seconds),
           "libsodium crypto_sign_open", reference)

    # MICROPAY: c = SHA256(r1); payer sends r2, sigma on (c, r2, a2), sigma1 on release tx.
    r1 = os.urandom(16)
    c = hashlib.sha256(r1).digest()
    r2 = os.urandom(16)
    body = c + r2 + os.urandom(32)
    sigma = crypto_sign(body, sk)[:64]
    release = os.urandom(120)
    sigma1 = crypto_sign(release, sk)[:64]
    bits = 7

    def micropay(i: int) -> None:
        crypto_sign_verify_detached(sigma, body, pk)
        crypto_sign_verify_detached(sigma1, release, pk)
        x = int.from_bytes(bytes(a ^ b for a, b in zip(r1, r2)), "big")
        _ = x & ((1 << bits) - 1) == 0

    report("check: MicroCash ticket", rate(microcash, seconds),
           "MICROPAY check (2 sigs + bits)", rate(micropay, seconds))


def bench_vdf(seconds: float) -> None:
    x = os.urandom(32)
    per_call = 1000
    figure = rate(lambda i: iterate_hash(x, per_call), seconds) * per_call
    reference = rate(lambda i: blake3(x).digest(), seconds)
    report("VDF iterations", figure, "blake3(32 bytes) calls", reference)


def run_all(seconds: float) -> None:
    """Every benchmark, one line each."""
    print(f"MicroCash benchmarks ({seconds:g} s per measurement, one core)")
    bench_issue(seconds)
    bench_check(seconds)
    bench_vdf(seconds)
