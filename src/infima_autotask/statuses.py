"""The status names of a sync item, from planning to the history to ``--json`` (SPEC §8),
and the outcomes of one write."""

from __future__ import annotations

import enum

UPDATED = "updated"  # written and read back
UNCHANGED = "unchanged"  # the line already shows the target
PLANNED = "planned"  # a change a dry run would write (or a real run is about to)
SKIPPED = "skipped"  # no billing period starts in the month: nothing is due
HELD = "held"  # a guard stopped it (lifted by --yes where SPEC §8 says so), or never sent
FAILED = "failed"  # needs a person: the Detail says what and what to do
WRITING = "writing"  # history only: the intent recorded before a write, until its outcome

FINAL = frozenset({UPDATED, UNCHANGED, PLANNED, SKIPPED, HELD, FAILED})
# Done for the period: ``sync --if-due`` leaves these clients alone (SPEC §8).
SUCCESS = (UPDATED, UNCHANGED, SKIPPED)


class Outcome(enum.Enum):
    """What one send of a write came to."""

    SENT = "sent"  # accepted by the PSA: verified in the batched read
    REJECTED = "rejected"  # refused (4xx, or a 500 with errors): failed, never re-sent
    UNKNOWN = "unknown"  # timeout, connection, 429, 5xx without errors: re-read first
    VERIFIED = "verified"  # read back and shown (the item is final)
    NOT_SENT = "not sent"  # stopped before it left (Ctrl-C during a rate-limit wait): held
