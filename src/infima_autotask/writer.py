"""The write path: each planned change sent once, its intent recorded first, read back after.

This is the part that must never bill twice (SPEC §8 "Writes", "Outcomes of a write", "The
first write", "Verification"; §10 for every PSA). A :class:`Writer` takes the items planning
marked ``planned`` and returns each one final (``updated``, ``failed`` or ``held``). What a
write is and how a line is read back belong to the PSA's backend (:mod:`infima_autotask.psa`);
the rules here are the same for every PSA: every send ends in one :class:`Outcome`, a write is
never retried by any layer, and an unknown outcome is re-read (after letting the PSA settle)
and sent once more only when the line still shows ``before``. Waiting goes through an
injected ``wait`` (Ctrl-C ends it), so tests drive every path without patching.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from infima_autotask.errors import ApiError
from infima_autotask.history import History, ItemRecord
from infima_autotask.landing import Landing
from infima_autotask.psa import LineBackend, Sent
from infima_autotask.statuses import FAILED, HELD, UPDATED, Outcome
from infima_autotask.sync import PlanItem

log = logging.getLogger(__name__)

WRITE_THREADS = 3  # Autotask's thread limit per endpoint; the client's semaphore agrees

# (stage label, done, total): lets the CLI draw a progress bar without the library knowing.
Progress = Callable[[str, int, int], None]


@dataclass
class Write:
    """One changed item on its way through the write path."""

    item: PlanItem
    intent_id: int = 0
    adjustment_id: int | None = None  # the PSA's id of what was written, when it says
    outcome: Outcome | None = None
    halts: bool = False  # rejected in a way that stops the run's other writes
    final: PlanItem | None = None


@dataclass(frozen=True)
class WriteResult:
    """Each written item's final state by client, and whether Ctrl-C stopped the writes."""

    finals: dict[int, PlanItem]
    interrupted: bool


class Writer:
    """Sends a run's changes to one PSA and reads them back (one instance per run and PSA)."""

    def __init__(
        self,
        backend: LineBackend,
        history: History,
        *,
        run_id: int,
        wait: Callable[[float], object] | None = None,
        progress: Progress | None = None,
        notice: Callable[[str], None] | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.backend = backend
        self.history = history
        self.run_id = run_id
        # Shared with the command's rate limits (``Runtime.stopping``) when given.
        self.abort = abort or threading.Event()
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
        stage = f"Writing to {self.backend.name}"
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
                    # A plain rejection is that item's failure only; the next write goes alone.
                    if first is None and (write.outcome is not Outcome.REJECTED or write.halts):
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
            sent = self.send(write)
            detail = sent.detail
            if sent.outcome is Outcome.SENT:
                return
            if sent.outcome is Outcome.NOT_SENT:
                self._finish(write, HELD, sent.message or detail)
                return
            if sent.outcome is Outcome.REJECTED and attempt == 2 and sent.repeat:
                # Refused as a repeat of a write already applied: the first send did land.
                self._after_duplicate(write, detail)
                return
            if sent.outcome is Outcome.REJECTED:
                self._finish(write, FAILED, sent.message or detail)
                return
            if sent.settle and not self.abort.is_set():
                log.info("client %d: waiting %.1fs before re-reading", item.client_id, sent.settle)
                self.wait(sent.settle)
            if self.abort.is_set():
                # Interrupted: never send again now. The intent stays open, so the next sync
                # waits for this create to settle and re-reads before anything else.
                write.final = replace(
                    item,
                    status=FAILED,
                    after=item.before,
                    message=(
                        f"outcome unknown ({detail}) and the run was interrupted before it could "
                        f"re-read; the next `infima-autotask sync` re-reads {self.backend.name} "
                        "first"
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
                    f"outcome unknown; check {self.backend.name} (sent twice, neither "
                    f"confirmed: {detail})",
                )
            elif state is None:
                self._finish(
                    write,
                    FAILED,
                    f"outcome unknown ({detail}) and the re-read failed; check {self.backend.name}",
                )
            else:
                self._finish(write, FAILED, f"outcome unknown ({detail}); {shown}")
            return

    def send(self, write: Write) -> Sent:
        """One send through the backend, never retried here or below."""
        sent = self.backend.send(write.item)
        write.outcome = sent.outcome
        write.halts = sent.halts
        if sent.ref is not None:
            write.adjustment_id = sent.ref
        return sent

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
            f"{self.backend.name}, and do not enter the change again by hand",
        )

    def reread(self, item: PlanItem) -> tuple[Landing | None, str]:
        """After an unknown outcome: where the write shows (None: the read failed), and what
        the line shows when it neither landed nor is still ``before``."""
        try:
            found = self.backend.read_back([item]).get(item.contract_service_id)
        except ApiError as exc:
            log.warning("client %d: re-read failed: %s", item.client_id, exc)
            return None, ""
        state = self.backend.landing(item, found)
        # Sent again only when nothing of it shows anywhere: a late landing is not "before".
        if state in (Landing.LANDED, Landing.BEFORE):
            return state, ""
        return state, self.backend.describe(item, found, state)

    # -- reading back -------------------------------------------------------------------

    def check_alone(self, write: Write) -> str | None:
        """The first write's own read-back: None when it landed, else why not."""
        item = write.item
        try:
            found = self.backend.read_back([item]).get(item.contract_service_id)
        except ApiError as exc:
            return self._unread(write, exc)
        return self._problem(item, found)

    def verify(self, writes: list[Write], *, confirmed: Write | None = None) -> None:
        """One batched read of every written item's line (SPEC §8 "Verification").

        ``confirmed`` was verified alone already: a failed batch read leaves it updated.
        """
        if not writes:
            return
        try:
            found = self.backend.read_back([write.item for write in writes])
        except ApiError as exc:
            for write in writes:
                if write is confirmed:
                    self._finish(write, UPDATED, write.item.message)
                else:
                    self._finish(write, FAILED, self._unread(write, exc))
            return
        for write in writes:
            item = write.item
            problem = self._problem(item, found.get(item.contract_service_id))
            if problem is None:
                self._finish(write, UPDATED, item.message)
            else:
                self._finish(write, FAILED, problem)

    def _problem(self, item: PlanItem, found: object) -> str | None:
        state = self.backend.landing(item, found)
        return None if state is Landing.LANDED else self.backend.describe(item, found, state)

    def _unread(self, write: Write, exc: ApiError) -> str:
        written = (
            f"written (adjustment {write.adjustment_id})" if write.adjustment_id else "written"
        )
        return (
            f"{written} but the verification read failed ({exc.message}); check {self.backend.name}"
        )

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


def join(*parts: str) -> str:
    """Message parts joined by ``; ``, empty ones left out."""
    return "; ".join(part for part in parts if part)
