"""The MICROPAY payer: a pool of ready MP escrows and the ticket exchange (SPEC §15).

``MpPayer`` does what ``micropay escrow create`` and ``micropay pay`` need:

- ``fund(n)`` sends ``n`` MP_ESCROWs on the key's terms (each recorded in the book before
  it is sent; ``mp_escrow_id = H(b"mp-escrow", txid)`` is known at once);
- ``refresh()`` reads each live escrow from the node (``getmpescrow``): ``pending`` →
  ``ready`` once on chain; gone → ``claimed`` (a winner took it) or ``refunded``;
- ``top_up()`` funds fresh escrows until ``pool`` are usable or on their way, so the
  payer always has one ready when a win spends the one in use — paying waits for a
  block only when every escrow of the pool was spent before a new one confirmed;
- ``pay(url, count)`` fetches commitments ``c`` from the payee in batches, and for each
  payment reserves a ready escrow in the book, signs ``[mp_escrow_id, c, r2,
  ticket_sig]``, posts it and resolves it from the ``r1`` the payee reveals. A win
  retires the escrow and tops the pool up at once (no waiting for a confirmation).

Errors are ``WalletError`` (a payee that cannot be reached leaves the ticket pending: the
next run sends it again first) and ``TxRejected``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from consensus.micropay import (R_SIZE, compute_mp_commitment, compute_mp_escrow_id,
                                is_mp_winning, sign_mp_ticket)
from consensus.tx import make_mp_escrow
from wallet.commands.common import TxRejected, WalletContext, WalletError, payee_answer, progress
from wallet.customer.micropaybook import (CLAIMED, DROPPED, LIVE, LOST, PENDING, READY,
                                          REFUNDED, REFUSED, RETIRED, UNKNOWN, WINNER,
                                          MicropayBook, MpEscrowRecord)
from wallet.rpcclient import RpcError

SEND_TIMEOUT = 30.0  # seconds for one HTTP exchange with the payee
COMMITMENT_BATCH = 64  # commitments fetched per request
RETRIES_PER_PAYMENT = 8  # tickets refused for a fixable reason before a payment gives up
NONCE_ATTEMPTS = 3  # MP_ESCROW sends retried after bad-nonce (a block raced the nonce read)
FUNDING_RETRY = 1.0  # seconds before funding is tried again after a failure
EXPIRY_SLACK = 1  # blocks beyond the payee's margin an escrow must still have
FATAL_REFUSALS = frozenset({"ticket-underpriced", "bad-ticket-signature"})
ESCROW_REFUSALS = frozenset({"mp-escrow-spent", "mp-escrow-expired", "unknown-mp-escrow"})


@dataclass(frozen=True)
class MpTerms:
    """How a payer funds an MP escrow: ``amount`` units, ``p = 2^-win_bits``, refunded
    ``blocks`` after the current round, ``fee`` units per MP_ESCROW."""

    amount: int
    win_bits: int
    blocks: int
    fee: int

    def to_json(self) -> dict[str, int]:
        return {"amount": self.amount, "win_bits": self.win_bits, "blocks": self.blocks,
                "fee": self.fee}


@dataclass
class PayStats:
    """What one ``pay`` did, for the command's output."""

    payments: int = 0
    wins: int = 0
    won_escrows: list[str] = field(default_factory=list)
    escrows_used: set[str] = field(default_factory=set)
    funded: int = 0
    resent: int = 0  # tickets left pending by an earlier run, delivered again
    resent_accepted: int = 0  # of those, accepted (payments of that run, not of this one)
    refused: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # reason -> count
    stalls: int = 0
    stall_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the payment loop

    def to_json(self) -> dict[str, Any]:
        return {"payments": self.payments, "wins": self.wins, "won_escrows": self.won_escrows,
                "escrows_used": len(self.escrows_used), "funded": self.funded,
                "resent": self.resent,
                "resent_accepted": self.resent_accepted, "refused": self.refused,
                "refusals": self.refusals, "stalls": self.stalls,
                "stall_seconds": round(self.stall_seconds, 3), "seconds": round(self.seconds, 3),
                "payments_per_second": round(self.payments / self.seconds, 1)
                if self.seconds else None}


class PayeeClient:
    """The payee's MICROPAY endpoints at ``url`` (``wallet.merchant.mp_service``)."""

    def __init__(self, url: str) -> None:
        from wallet.httpclient import HttpConnections

        self.url = url.rstrip("/")
        try:
            self._http = HttpConnections(self.url + "/v1/mp", SEND_TIMEOUT)
        except ValueError as exc:
            raise WalletError(f"--to: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, doc: dict, what: str) -> dict[str, Any]:
        try:
            status, content = self._http.request("POST", path, json.dumps(doc).encode(),
                                                 {"Content-Type": "application/json"})
        except OSError as exc:
            raise WalletError(f"cannot {what} at {self.url}: {exc}") from None
        return payee_answer(status, content)

    def commitments(self, count: int) -> dict[str, Any]:
        """``{"payee", "price", "margin", "commitments"}`` (checked shapes)."""
        reply = self._post("/commitments", {"count": count}, "fetch commitments")
        try:
            reply["payee_bytes"] = bytes.fromhex(reply["payee"])
            reply["c_list"] = [bytes.fromhex(c) for c in reply["commitments"]]
            assert len(reply["payee_bytes"]) == 32 and all(len(c) == 32 for c in reply["c_list"])
            assert isinstance(reply["price"], int) and isinstance(reply["margin"], int)
        except (KeyError, TypeError, ValueError, AssertionError):
            raise WalletError(f"payee sent malformed commitments: {str(reply)[:200]}") from None
        return reply

    def ticket(self, ticket_json: dict[str, str], what: str) -> dict[str, Any]:
        """The answer to one ticket (``results[0]``)."""
        reply = self._post("/tickets", {"tickets": [ticket_json]}, what)
        results = reply.get("results")
        if not (isinstance(results, list) and len(results) == 1
                and isinstance(results[0], dict)):
            raise WalletError(f"payee sent a malformed ticket answer: {str(reply)[:200]}")
        return results[0]


def revealed_r1(answer: dict[str, Any], c: bytes) -> bytes | None:
    """The ``r1`` of an answer if it opens commitment ``c``, else None."""
    try:
        r1 = bytes.fromhex(answer.get("r1") or "")
    except (TypeError, ValueError):
        return None
    return r1 if len(r1) == R_SIZE and compute_mp_commitment(r1) == c else None


class MpPayer:
    """Pays from the wallet key ``payer_key`` with MP escrows on ``terms`` (module
    docstring); ``pool`` is how many usable escrows it keeps."""

    def __init__(self, wallet: WalletContext, payer_key: str, terms: MpTerms | None,
                 pool: int = 2, say: Callable[[str], None] = progress) -> None:
        self.wallet = wallet
        self.book = MicropayBook(wallet.wallet_dir)
        self.payer_key = payer_key
        self.payer = wallet.key_address(payer_key)
        self.terms = terms
        self.pool = pool
        self.say = say
        self.stats = PayStats()
        self._seed: bytes | None = None
        self._funding_failed = -FUNDING_RETRY  # monotonic time of the last failure

    @property
    def seed(self) -> bytes:
        if self._seed is None:
            self._seed = self.wallet.load_seed(self.payer_key)
        return self._seed

    # ---- escrows -----------------------------------------------------------------------

    def fund(self, count: int, *, template: bool = False) -> list[MpEscrowRecord]:
        """Send ``count`` MP_ESCROWs on ``terms``; their records (status pending). Raises
        ``WalletError`` for insufficient funds, ``TxRejected`` if the node refuses one."""
        terms = self.terms
        if terms is None:
            raise WalletError("no escrow terms: give --amount and --win-bits (or run "
                              "`micropay escrow create` once)")
        have = int(self.wallet.account(self.payer)["balance"])
        if count * (terms.amount + terms.fee) > have:
            raise WalletError(f"insufficient funds: {self.payer_key} has {have} units; "
                              f"{count} escrows need {count} x ({terms.amount} + {terms.fee} "
                              "fee) units")
        genesis = self.wallet.genesis_hash()
        refund_height = self.wallet.height() + 1 + terms.blocks
        made = []
        for _ in range(count):
            for attempt in range(NONCE_ATTEMPTS):
                tx = make_mp_escrow(self.seed, genesis, self.wallet.next_nonce(self.payer),
                                    terms.fee, terms.amount, terms.win_bits, refund_height)
                txid = tx.txid()
                record = MpEscrowRecord(compute_mp_escrow_id(txid).hex(), txid.hex(),
                                        self.payer_key, self.payer.hex(), genesis.hex(),
                                        terms.amount, terms.win_bits, refund_height, terms.fee)
                known = self.book.get(record.mp_escrow_id) is not None
                if not known:
                    self.book.add(record, terms.to_json() if template else None)
                try:
                    if known:  # the same nonce and terms as an escrow already sent
                        raise TxRejected("txn-already-known")
                    self.wallet.submit(tx)
                    break
                except TxRejected as exc:
                    # A block may have taken our previous MP_ESCROW between the account
                    # read and the mempool check of ``next_nonce``: the nonce is stale
                    # (bad-nonce), or the transaction is that previous one, identical
                    # (same nonce and refund height): keep its record, try a fresh nonce.
                    already = exc.reason in ("txn-already-known", "txn-already-in-mempool")
                    if not (known or already):
                        self.book.drop(record.mp_escrow_id)
                    if (exc.reason != "bad-nonce" and not already
                            or attempt == NONCE_ATTEMPTS - 1):
                        raise
            made.append(record)
            self.stats.funded += 1
        return made

    def refresh(self, pending_only: bool = False) -> int:
        """Bring the live records up to date from the node; the best height."""
        t = self.wallet.height()
        for r in self.book.all(self.payer_key):
            if r.status not in LIVE or (pending_only and r.status != PENDING):
                continue
            if r.status == PENDING:
                # the transaction first: one mined between the two reads is found on chain
                found = self.wallet.call("gettransaction", r.txid)
                state = self.wallet.call("getmpescrow", r.mp_escrow_id)
                if found is None and state is None:  # or caught between mempool and block
                    found = self.wallet.call("gettransaction", r.txid)
                    state = self.wallet.call("getmpescrow", r.mp_escrow_id)
                if state is not None:
                    self.book.set_status(r.mp_escrow_id, READY, only_from=frozenset({PENDING}))
                elif found is None:
                    self.book.set_status(r.mp_escrow_id, DROPPED)
                elif found.get("status") == "confirmed":
                    self.book.set_status(r.mp_escrow_id, REFUNDED)
                continue
            state = self.wallet.call("getmpescrow", r.mp_escrow_id)
            if state is None:
                gone = CLAIMED if (r.won_c or t < r.refund_height) else REFUNDED
                self.book.set_status(r.mp_escrow_id, gone)
        return t

    def usable(self, min_refund: int) -> int:
        """Escrows ready for a ticket, or on their way (pending), refunded no sooner than
        ``min_refund``."""
        return sum(1 for r in self.book.all(self.payer_key)
                   if r.refund_height >= min_refund
                   and (r.status == PENDING or (r.status == READY and not r.pending)))

    def top_up(self, min_refund: int) -> None:
        """Fund escrows until ``pool`` are usable (a failure to fund is reported, paying
        goes on with what there is, and funding is tried again ``FUNDING_RETRY`` s later)."""
        need = self.pool - self.usable(min_refund)
        if need <= 0 or time.monotonic() < self._funding_failed + FUNDING_RETRY:
            return
        try:
            self.fund(need)
        except (WalletError, TxRejected) as exc:
            self._funding_failed = time.monotonic()
            self.say(f"warning: cannot fund a fresh MP escrow (trying again in "
                     f"{FUNDING_RETRY:g} s): {exc.format_message()}")

    # ---- tickets -----------------------------------------------------------------------

    def _exchange(self, client: PayeeClient, record: MpEscrowRecord, pending: dict[str, str],
                  what: str) -> dict[str, Any]:
        """Sign the record's pending ticket (the same bytes every time) and post it; the
        answer with ``outcome`` (for ``MicropayBook.resolve``) and ``won`` added. Whether
        it won is computed here from the revealed ``r1``, never taken from the answer."""
        eid, c = bytes.fromhex(record.mp_escrow_id), bytes.fromhex(pending["c"])
        r2, payee = bytes.fromhex(pending["r2"]), bytes.fromhex(pending["payee"])
        ticket = sign_mp_ticket(self.seed, bytes.fromhex(record.genesis_hash), eid, c, r2,
                                payee)
        from wallet.merchant.mp_service import ticket_json

        answer = client.ticket(ticket_json(ticket), what)
        r1 = revealed_r1(answer, c)
        won = r1 is not None and is_mp_winning(r1, r2, record.win_bits)
        if r1 is None:
            outcome = UNKNOWN
        elif won:
            outcome = WINNER
        else:
            outcome = LOST if answer.get("accepted") is True else REFUSED
        return {**answer, "outcome": outcome, "won": won}

    def _deliver(self, client: PayeeClient, record: MpEscrowRecord, pending: dict[str, str],
                 what: str) -> dict[str, Any]:
        """``_exchange``, then the outcome written to the book."""
        answer = self._exchange(client, record, pending, what)
        self.book.resolve(record.mp_escrow_id, pending["c"], answer["outcome"])
        return answer

    def resend_pending(self, client: PayeeClient, payee: str,
                       client_for: Callable[[str], PayeeClient]) -> None:
        """Deliver again every ticket left pending by an earlier run (its answer was lost):
        to ``client`` when it is for ``payee`` (hex; the service may have moved), else to
        the URL it went to. One that cannot be delivered stays pending (its escrow takes
        no ticket meanwhile) and is reported."""
        for r in self.book.all(self.payer_key):
            if r.status not in LIVE or not r.pending:
                continue
            target = client if r.pending["payee"] == payee else client_for(r.pending["url"])
            try:
                answer = self._deliver(target, r, r.pending, "deliver again the pending "
                                       f"ticket on MP escrow {r.mp_escrow_id}")
            except WalletError as exc:
                if target is client:
                    raise
                self.say(f"warning: {exc.format_message()}; it stays pending")
                continue
            self.stats.resent += 1
            if answer.get("accepted"):
                self.stats.resent_accepted += 1
                self._count_win(r, answer)

    def _count_win(self, record: MpEscrowRecord, answer: dict[str, Any]) -> None:
        if answer["won"]:
            self.stats.wins += 1
            self.stats.won_escrows.append(record.mp_escrow_id)

    def pay(self, client: PayeeClient, count: int, payee_check: bytes | None,
            timeout: float, client_for: Callable[[str], PayeeClient] | None = None
            ) -> PayStats:
        """Pay ``count`` tickets to the payee behind ``client`` (module docstring), after
        delivering the tickets left pending (``resend_pending``; ``client_for`` opens
        other payees' URLs); those are not part of ``count``. Waits at most ``timeout``
        seconds in all for escrows to be ready.

        An accepted ticket's outcome is written together with the next reservation (one
        durable write per payment, not two); a crash in between leaves it pending, and
        the next run learns it again from the payee."""
        unsettled: list[tuple[str, str, str]] = []  # (escrow, c, outcome) not written yet
        started = time.monotonic()
        try:
            return self._pay(client, count, payee_check, timeout, client_for, unsettled)
        finally:
            for item in unsettled:
                self.book.resolve(*item)
            self.stats.seconds = time.monotonic() - started

    def _pay(self, client: PayeeClient, count: int, payee_check: bytes | None,
             timeout: float, client_for: Callable[[str], PayeeClient] | None,
             unsettled: list[tuple[str, str, str]]) -> PayStats:
        terms, stats = self.terms, self.stats
        commitments: list[bytes] = []
        info: dict[str, Any] = {}
        t = self.refresh()
        fresh = True  # no block since the last refresh
        waited_since = None
        deadline = time.monotonic() + timeout
        while stats.payments < count:
            if not commitments:
                first = not info
                info = client.commitments(min(COMMITMENT_BATCH, count - stats.payments))
                if payee_check is not None and info["payee_bytes"] != payee_check:
                    raise WalletError(f"the service at {client.url} is payee "
                                      f"{info['payee']}, not the --payee given")
                if terms is not None and terms.amount < info["price"] << terms.win_bits:
                    raise WalletError(f"a ticket on {terms.amount} units at 2^-"
                                      f"{terms.win_bits} is worth less than the payee's "
                                      f"price of {info['price']} units; nothing signed")
                commitments = info["c_list"]
                if first:
                    self.resend_pending(client, info["payee"], client_for or PayeeClient)
                    self.top_up(t + 2 + info["margin"] + EXPIRY_SLACK)
            min_refund = t + 2 + info["margin"] + EXPIRY_SLACK
            c = commitments.pop(0)
            record = self.book.reserve_ticket(self.payer_key, c.hex(), info["payee"],
                                              client.url, os.urandom(R_SIZE).hex(), min_refund,
                                              settle=unsettled.pop() if unsettled else None)
            if record is not None and record.amount < info["price"] << record.win_bits:
                # an older escrow on terms below the price: never used for this payee
                self.book.resolve(record.mp_escrow_id, c.hex(), REFUSED)
                self.book.set_status(record.mp_escrow_id, RETIRED, only_from=frozenset({READY}))
                commitments.insert(0, c)
                continue
            if record is None:
                commitments.insert(0, c)
                self.top_up(min_refund)
                if not fresh:  # an escrow may have confirmed since the last look
                    t, fresh = self.refresh(pending_only=True), True
                else:
                    t, waited_since = self._wait(t, deadline, waited_since)
                continue
            fresh = False
            if waited_since is not None:
                stats.stall_seconds += time.monotonic() - waited_since
                waited_since = None
            answer = self._exchange(client, record, record.pending,
                                    "deliver a ticket (it is recorded; the next `micropay "
                                    "pay` sends it again first)")
            stats.escrows_used.add(record.mp_escrow_id)
            settle = (record.mp_escrow_id, record.pending["c"], answer["outcome"])
            if answer.get("accepted") is True:
                unsettled.append(settle)
                stats.payments += 1
                self._count_win(record, answer)
                if answer["won"]:
                    self.top_up(min_refund)  # a fresh escrow at once, ready in a block or two
                continue
            self.book.resolve(*settle)
            stats.refused += 1
            reason = answer.get("reason")
            stats.refusals[str(reason)] = stats.refusals.get(str(reason), 0) + 1
            if reason in FATAL_REFUSALS:
                raise WalletError(f"payee refused the ticket: {reason}")
            if reason in ESCROW_REFUSALS:
                self.book.set_status(record.mp_escrow_id, RETIRED, only_from=frozenset({READY}))
            if answer["won"]:
                self.top_up(min_refund)
            if stats.refused > RETRIES_PER_PAYMENT * (stats.payments + 1):
                raise WalletError(f"payee keeps refusing tickets (last: {reason})")
        return stats

    def _wait(self, t: int, deadline: float, waited_since: float | None
              ) -> tuple[int, float]:
        """No escrow is ready: wait for the next block, then refresh; count the stall."""
        now = time.monotonic()
        if waited_since is None:
            self.stats.stalls += 1
            waited_since = now
        if now >= deadline:
            raise WalletError("no ready MP escrow in time (is anyone mining? is the pool "
                              "funded? see `micropay list`)")
        best = (self.wallet.info(refresh=True) or {}).get("best_hash")
        try:
            self.wallet.call("waitfornewblock", int(min(1.0, deadline - now) * 1000) or 1, best)
        except RpcError:
            time.sleep(0.2)  # a node without waitfornewblock
        return self.refresh(pending_only=True), waited_since
