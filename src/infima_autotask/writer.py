"""The write path: each planned change sent once, its intent recorded first, read back after.

This is the part that must never bill twice (SPEC §8 "Writes", "Outcomes of a write", "The
first write", "Verification"). A :class:`Writer` takes the items planning marked ``planned``
and returns each one final (``updated``, ``failed`` or ``held``). Every send ends in one
:class:`Outcome`; a create is never retried by any layer, and an unknown outcome is re-read
(after letting Autotask settle) and sent once more only when nothing of it shows. Waiting goes
through an injected ``wait`` (Ctrl-C ends it), so tests drive every path without patching.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date

from infima_autotask.autotask import AutotaskApi
from infima_autotask.errors import ApiError, ApiRejected, ApiUnavailable
from infima_autotask.history import History, ItemRecord
from infima_autotask.landing import Landing, item_landing, landing_message, landing_problem
from infima_autotask.model import read_units_rows
from infima_autotask.plan_file import adjustment_body
from infima_autotask.statuses import FAILED, HELD, UPDATED
from infima_autotask.sync import PlanItem, exact

log = logging.getLogger(__name__)

ADJUSTMENTS = "ContractServiceAdjustments"
WRITE_THREADS = 3  # Autotask's thread limit per endpoint; the client's semaphore agrees

REFUSED = "Autotask refused the change"
MOVED = "Autotask moved the date of the change"
DUPLICATE_DATE = "duplicate data into contract_service_period"
POSTED_PERIOD = "already approved and posted"

# (stage label, done, total): lets the CLI draw a progress bar without the library knowing.
Progress = Callable[[str, int, int], None]


class Outcome(enum.Enum):
    """What one send of a write came to."""

    SENT = "sent"  # accepted by Autotask: verified in the batched read
    REJECTED = "rejected"  # refused (4xx, or a 500 with errors): failed, never re-sent
    UNKNOWN = "unknown"  # timeout, connection, 429, 5xx without errors: re-read first
    VERIFIED = "verified"  # read back and shown on E (the item is final)


@dataclass
class Write:
    """One changed item on its way through the write path."""

    item: PlanItem
    intent_id: int = 0
    adjustment_id: int | None = None
    outcome: Outcome | None = None
    final: PlanItem | None = None
    settle: float = 0.0  # seconds to wait before re-reading after an unknown outcome


@dataclass(frozen=True)
class WriteResult:
    """Each written item's final state by client, and whether Ctrl-C stopped the writes."""

    finals: dict[int, PlanItem]
    interrupted: bool


class Writer:
    """Sends a run's changes to Autotask and reads them back (one instance per run)."""

    def __init__(
        self,
        autotask: AutotaskApi,
        history: History,
        *,
        run_id: int,
        zone: str | None,
        window: Callable[[Sequence[PlanItem]], tuple[date, date]],
        wait: Callable[[float], object] | None = None,
        progress: Progress | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.autotask = autotask
        self.history = history
        self.run_id = run_id
        self.zone = zone
        self.window = window  # the units-read window covering these items' E - 1 .. E (+ 1)
        self.abort = threading.Event()
        # The settle wait before a re-read; ending it early on Ctrl-C is the default's point.
        self.wait = wait or self.abort.wait
        self.progress = progress
        self.notice = notice

    # -- the run's writes ---------------------------------------------------------------

    def write_all(self, items: Sequence[PlanItem]) -> WriteResult:
        """Write every planned item once; SPEC §8 "The first write" gates the rest.

        With two or more writes, writes are sent alone and verified one by one until one
        verifies (a rejected one is that item's failure only); if one does not verify,
        nothing more is written and the rest are held. The rest then go out at most three at
        a time and are verified in one batched read.

        Ctrl-C (or SIGTERM, which the CLI turns into the same) stops at once: the requests in
        flight finish, nothing queued is sent, what was sent is verified and recorded, and the
        rest are held as not sent (SPEC §3, exit 130).
        """
        writes = [Write(item) for item in items]
        total = len(writes)
        stage = "Writing to Autotask"
        interrupted = False
        first: Write | None = None  # the write that opened the gate, verified alone
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            try:
                remaining = list(writes)
                while total >= 2 and remaining and first is None:
                    write = remaining.pop(0)
                    # In a thread like the rest, so Ctrl-C lets this request finish too.
                    self._wait_for([pool.submit(self._apply, write)])
                    if write.outcome is Outcome.SENT:
                        problem = self.check_alone(write)
                        if problem is None:
                            first = write
                        else:
                            self._finish(write, FAILED, problem)
                    self._tick(stage, total - len(remaining), total)
                    if write.final is not None and write.final.status == UPDATED:
                        break
                    if first is None and not _refused(write.final):
                        self._hold(
                            remaining,
                            f"not written: the first write of this run, client "
                            f"{write.item.client_id}, did not verify; fix what its Detail says, "
                            "then run `sync` again",
                        )
                        remaining = []
                futures = [pool.submit(self._apply, write) for write in remaining]
                self._wait_for(futures, stage=stage, done=total - len(remaining), total=total)
            except KeyboardInterrupt:
                self.abort.set()
                interrupted = True
                if self.notice is not None:
                    self.notice(
                        "Stopping: nothing more is sent; waiting for the writes in flight to "
                        "finish and be recorded."
                    )
                with signals_deferred():
                    # Requests in flight finish; queued ones never start.
                    pool.shutdown(wait=True, cancel_futures=True)
        # The first write is read back again with the rest: SPEC §9 counts ceil(k/500) reads.
        sent = [
            w for w in writes if w.outcome is Outcome.SENT and w.final is None and w is not first
        ]
        with signals_deferred() if interrupted else contextlib.nullcontext():
            if first is not None and first.final is None and not sent:
                if interrupted:
                    self.verify([first], confirmed=first)
                else:
                    self._finish(first, UPDATED, first.item.message)  # gate opened on the last
            elif first is not None and first.final is None:
                self.verify([first, *sent], confirmed=first)
            else:
                self.verify(sent)
            if interrupted:
                self._hold(
                    [w for w in writes if w.final is None and w.intent_id == 0],
                    "not sent: the run was interrupted; run `sync` again to finish",
                )
        finals = {write.item.client_id: write.final for write in writes if write.final is not None}
        return WriteResult(finals, interrupted)

    def _tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def _wait_for(
        self,
        futures: list[Future[None]],
        *,
        stage: str = "",
        done: int = 0,
        total: int = 0,
    ) -> None:
        """Wait for each write in turn; a failure in a thread (the history) stops the run
        after every thread has stopped, and Ctrl-C reaches the caller at once."""
        errors: list[Exception] = []
        for count, future in enumerate(futures, start=done + 1):
            try:
                future.result()
            except Exception as exc:  # noqa: PERF203 - re-raised below, after the others
                errors.append(exc)
                self.abort.set()
            if stage:
                self._tick(stage, count, total)
        if errors:
            raise errors[0]

    def _hold(self, rest: list[Write], message: str) -> None:
        """Writes never sent (the first write did not verify, or an interrupt): held, said so."""
        for write in rest:
            write.final = replace(write.item, status=HELD, message=message, after=write.item.before)
        self.history.record_items(self.run_id, [ItemRecord.of(w.final) for w in rest if w.final])

    # -- one write ----------------------------------------------------------------------

    def _apply(self, write: Write) -> None:
        if self.abort.is_set():
            return
        try:
            self.write_one(write)
        except BaseException:
            # A history failure must stop the other threads before their next write.
            self.abort.set()
            raise

    def write_one(self, write: Write) -> None:
        """Record the intent, send, and settle an unknown outcome (SPEC §8 "Outcomes")."""
        item = write.item
        # Committed before the request leaves: a kill after the send is found next run.
        write.intent_id = self.history.record_intent(self.run_id, ItemRecord.of(item))
        for attempt in (1, 2):
            outcome, detail = self.send(write)
            if outcome is Outcome.SENT:
                return
            if outcome is Outcome.REJECTED and attempt == 2 and DUPLICATE_DATE in detail.lower():
                # Refused as a second adjustment that day: the first send did land after all.
                self._after_duplicate(write, detail)
                return
            if outcome is Outcome.REJECTED:
                self._finish(write, FAILED, refusal(item, detail))
                return
            if write.settle and not self.abort.is_set():
                log.info("client %d: waiting %.1fs before re-reading", item.client_id, write.settle)
                self.wait(write.settle)
            if self.abort.is_set():
                # Interrupted: never send again now. The intent stays open, so the next sync
                # waits for this create to settle and re-reads before anything else.
                write.final = replace(
                    item,
                    status=FAILED,
                    after=item.before,
                    message=(
                        f"outcome unknown ({detail}) and the run was interrupted before it could "
                        "re-read; the next `infima-autotask sync` re-reads Autotask first"
                    ),
                )
                return
            state, shown = self.reread(item)
            if state is Landing.LANDED:
                note = "applied (confirmed by re-reading after an unknown outcome)"
                self._finish(write, UPDATED, join(item.message, note))
                return
            if state is Landing.BEFORE and attempt == 1:
                log.info(
                    "client %d: not applied after %s; sending once more", item.client_id, detail
                )
                continue
            if state is Landing.BEFORE:
                self._finish(
                    write,
                    FAILED,
                    f"outcome unknown; check Autotask (sent twice, neither confirmed: {detail})",
                )
            elif state is None:
                self._finish(
                    write,
                    FAILED,
                    f"outcome unknown ({detail}) and the re-read failed; check Autotask",
                )
            else:
                self._finish(write, FAILED, f"outcome unknown ({detail}); {shown}")
            return

    def send(self, write: Write) -> tuple[Outcome, str]:
        """One create, never retried here or below; the outcome and the detail of a failure."""
        item = write.item
        body = adjustment_body(item, self.zone)
        try:
            write.adjustment_id = self.autotask.create(ADJUSTMENTS, body)
        except ApiRejected as exc:
            write.outcome = Outcome.REJECTED
            return write.outcome, "; ".join(exc.errors) or exc.message
        except ApiError as exc:  # timeout, connection, 429, 5xx without errors: unknown
            write.settle = settle_seconds(self.autotask, exc)
            # Not a warning: the re-read settles it, and the item's status and Detail report
            # it; a warning line would break --quiet on a run that ends all updated.
            log.info("client %d: write outcome unknown: %s", item.client_id, exc)
            write.outcome = Outcome.UNKNOWN
            return write.outcome, exc.message
        write.outcome = Outcome.SENT
        return write.outcome, ""

    def _after_duplicate(self, write: Write, detail: str) -> None:
        """The resend of an unknown outcome was refused as a same-day duplicate."""
        state, shown = self.reread(write.item)
        if state is Landing.LANDED:
            note = "applied by the first send (the second was refused as a same-day duplicate)"
            self._finish(write, UPDATED, join(write.item.message, note))
            return
        self._finish(
            write,
            FAILED,
            f"outcome unknown: the second send was refused as a same-day duplicate ({detail}), "
            f"so the first one probably landed ({shown or 'the re-read did not show it'}); check "
            "Autotask, and do not enter the change again by hand",
        )

    def reread(self, item: PlanItem) -> tuple[Landing | None, str]:
        """After an unknown outcome: where the write shows (None: the read failed), and what
        Autotask shows when it neither landed nor is still ``before``."""
        try:
            rows = read_units_rows(self.autotask, [item.contract_service_id], *self.window([item]))
        except ApiError as exc:
            log.warning("client %d: re-read failed: %s", item.client_id, exc)
            return None, ""
        found = rows.get(item.contract_service_id, [])
        state = item_landing(item, found)
        # Sent again only when nothing of it shows anywhere: a late landing is not "before".
        if state in (Landing.LANDED, Landing.BEFORE):
            return state, ""
        return state, landing_message(state, found, item)

    # -- reading back -------------------------------------------------------------------

    def check_alone(self, write: Write) -> str | None:
        """The first write's own read-back: None when it landed, else why not."""
        item = write.item
        try:
            rows = read_units_rows(self.autotask, [item.contract_service_id], *self.window([item]))
        except ApiError as exc:
            return (
                f"{_written(write)} but the verification read failed ({exc.message}); "
                "check Autotask"
            )
        return landing_problem(item, rows.get(item.contract_service_id, []))

    def verify(self, writes: list[Write], *, confirmed: Write | None = None) -> None:
        """One batched read of every written item's units rows (SPEC §8 "Verification").

        ``confirmed`` was verified alone already: a failed batch read leaves it updated.
        """
        if not writes:
            return
        try:
            rows = read_units_rows(
                self.autotask,
                [write.item.contract_service_id for write in writes],
                *self.window([write.item for write in writes]),
            )
        except ApiError as exc:
            for write in writes:
                if write is confirmed:
                    self._finish(write, UPDATED, write.item.message)
                    continue
                self._finish(
                    write,
                    FAILED,
                    f"{_written(write)} but the verification read failed ({exc.message}); "
                    "check Autotask",
                )
            return
        for write in writes:
            item = write.item
            problem = landing_problem(item, rows.get(item.contract_service_id, []))
            if problem is None:
                self._finish(write, UPDATED, item.message)
            else:
                self._finish(write, FAILED, problem)

    def _finish(self, write: Write, status: str, message: str) -> None:
        item = write.item
        after = item.target if status == UPDATED else item.before
        if status == UPDATED:
            write.outcome = Outcome.VERIFIED
        final = replace(
            item, status=status, message=message, after=after, adjustment_id=write.adjustment_id
        )
        self.history.complete_item(
            write.intent_id,
            status=status,
            after=after,
            message=message,
            adjustment_id=write.adjustment_id,
        )
        write.final = final


def threshold_problem(autotask: AutotaskApi, k: int, share: float) -> str | None:
    """Why ``k`` writes would pass ``share`` percent of this hour's API threshold (SPEC §8), or
    None. Read on every run, even without writes, so the request count is the SPEC §9 floor."""
    threshold = autotask.threshold()
    # The writes, their batched verification and the first write's own read-back.
    need = k + math.ceil(k / 500) + 1
    # Exact: in floats 57 / 100 * 10000 is 5699.999..., refusing a run that stays at 57%.
    if not k or (threshold.used + need) * 100 <= exact(share) * threshold.limit:
        return None
    return (
        f"Autotask API usage is {threshold.used} of {threshold.limit} requests this hour; "
        f"{need} more would pass max_api_usage_percent ({share:g}%)."
    )


def _refused(item: PlanItem | None) -> bool:
    """Autotask refused the write: nothing landed, so the next write may go alone."""
    return item is not None and item.status == FAILED and item.message.startswith(REFUSED)


def refusal(item: PlanItem, detail: str) -> str:
    """The message of a rejected write; a same-day duplicate says it needs a person, and a
    refusal to touch a posted period (planning saw E's period open) says the date moved."""
    if POSTED_PERIOD in detail.lower() and item.effective is not None:
        return (
            f"{MOVED}: Autotask refused it as a change to an approved and posted period "
            f"({detail}), but the period from {item.effective.isoformat()} is open, so "
            "Autotask dated it earlier; nothing was written. Set autotask.timezone to the "
            "tenant's time zone (`infima-autotask doctor` shows it), then run sync again"
        )
    if DUPLICATE_DATE in detail.lower():
        day = item.effective.isoformat() if item.effective else "that day"
        return (
            f"{REFUSED}: it already has an adjustment of contract service "
            f"{item.contract_service_id} dated {day} and takes no second one ({detail}); make "
            "this change by hand in Autotask"
        )
    return f"{REFUSED}: {detail}"


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore further Ctrl-C and SIGTERM while the writes already sent finish and are recorded:
    a second Ctrl-C must not leave a create in flight unrecorded (exit 130's promise)."""
    try:
        previous = [(s, signal.signal(s, signal.SIG_IGN)) for s in (signal.SIGINT, signal.SIGTERM)]
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous:
            signal.signal(number, handler)


def _written(write: Write) -> str:
    """``written (adjustment 38000001)``, or ``written`` when Autotask sent no id."""
    return f"written (adjustment {write.adjustment_id})" if write.adjustment_id else "written"


def settle_ceiling(autotask: AutotaskApi) -> float:
    """The longest wait for a create whose outcome is unknown (see :func:`settle_seconds`)."""
    return min(autotask.http.retry.max_delay, autotask.http.timeout[1])


def settle_seconds(autotask: AutotaskApi, exc: ApiError) -> float:
    """How long to let Autotask finish a create whose outcome is unknown before re-reading.

    A create that timed out, lost its connection or got a gateway error may still be running
    behind the gateway; a re-read at once would miss it and the resend would bill twice. So
    wait the read loop's longest backoff, capped by the read timeout (60 s: with the 60 s
    already spent on a timeout, longer than ASP.NET's default 110 s execution timeout). A 429
    was refused before any work: only its Retry-After is honoured. A bare 500 is the server's
    own finished answer: no wait.
    """
    ceiling = settle_ceiling(autotask)
    if not isinstance(exc, ApiUnavailable):
        return 0.0
    if exc.status == 429:
        return min(exc.retry_after or 0.0, ceiling)
    if exc.status is None or exc.status in (502, 503, 504):
        return ceiling
    return 0.0


def join(*parts: str) -> str:
    """Message parts joined by ``; ``, empty ones left out."""
    return "; ".join(part for part in parts if part)
