"""Review before write (SPEC §8): a dry run's plan saved to a file, and read back so that
`sync --plan FILE` writes exactly what was reviewed.

The file is JSON: the period, and every item of the dry run with the request each planned
write would send. Only what decides a write is compared on the way back (the line, the
count, the units before, the target, the day and the rates); anything else may differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from infima_autotask.billing import wire_effective_date
from infima_autotask.config import AUTOTASK, COUNT_PSAS, HALO
from infima_autotask.connectwise.client import patch_body
from infima_autotask.errors import UsageError
from infima_autotask.fsutil import write_atomically
from infima_autotask.halo.client import count_body
from infima_autotask.statuses import PLANNED
from infima_autotask.sync import (
    PlanItem,
    parse_month,
)
from infima_autotask.whole_number import whole_from_json

PLAN_VERSION = 1


def adjustment_body(item: PlanItem, zone: str | None) -> dict[str, Any]:
    """The ContractServiceAdjustments create a planned item sends (SPEC §8 "Writes")."""
    if item.effective is None:  # planning never plans a write without E
        raise ValueError(f"client {item.client_id}: a write without an effective date")
    return {
        "contractID": item.contract_id,
        "contractServiceID": item.contract_service_id,
        "serviceID": item.service_id,
        "effectiveDate": wire_effective_date(item.effective, zone),
        "unitChange": item.change,
        "adjustedUnitPrice": item.unit_price,
        "adjustedUnitCost": item.new_unit_cost,
    }


def request_body(item: PlanItem, zone: str | None) -> Any:
    """The body a planned item's write sends: Autotask's adjustment (a delta), ConnectWise's
    JSON Patch or HaloPSA's subscription entry (both the absolute target)."""
    if item.psa == AUTOTASK:
        return adjustment_body(item, zone)
    if item.target is None:  # planning never plans a write without a target
        raise ValueError(f"client {item.client_id}: a write without a target")
    if item.psa == HALO:
        return count_body(item.contract_service_id, item.account_id, item.target)
    return patch_body(item.target, item.new_unit_cost if item.cost_changes else None)


@dataclass(frozen=True)
class PlannedWrite:
    """What decides one reviewed write."""

    contract_service_id: int
    users: int | None
    before: int | None
    target: int | None
    effective: str | None
    unit_price: float | None
    unit_cost: float | None
    sent_date: str | None  # the effectiveDate text: a changed autotask.timezone changes it

    @classmethod
    def of(cls, item: PlanItem, zone: str | None) -> PlannedWrite:
        return cls(
            contract_service_id=item.contract_service_id,
            users=item.users,
            before=item.before,
            target=item.target,
            effective=item.effective.isoformat() if item.effective else None,
            unit_price=item.unit_price,
            unit_cost=item.new_unit_cost,
            sent_date=wire_effective_date(item.effective, zone) if item.effective else None,
        )

    def differences(self, now: PlannedWrite) -> list[str]:
        """What changed since the review, in words (empty when nothing did)."""
        found = []
        for name in ("contract_service_id", "users", "before", "target", "effective", "sent_date"):
            old, new = getattr(self, name), getattr(now, name)
            if old != new:
                found.append(f"{name.replace('_', ' ')} {old} -> {new}")
        for name in ("unit_price", "unit_cost"):
            old, new = getattr(self, name), getattr(now, name)
            if (old is None) != (new is None) or (
                old is not None and new is not None and not math.isclose(old, new, abs_tol=1e-6)
            ):
                found.append(f"{name.replace('_', ' ')} {old} -> {new}")
        return found


@dataclass(frozen=True)
class ReviewedPlan:
    """A reviewed dry run: its period and its planned writes by client."""

    source: str
    period: date
    writes: Mapping[int, PlannedWrite]

    @classmethod
    def of(
        cls, items: Iterable[PlanItem], period: date, source: str, zone: str | None
    ) -> ReviewedPlan:
        planned = {i.client_id: PlannedWrite.of(i, zone) for i in items if i.status == PLANNED}
        return cls(source, period, planned)


def save_plan(path: Path, period: str, items: Iterable[PlanItem], zone: str | None) -> int:
    """Write a dry run's plan to ``path`` atomically; returns the number of planned writes."""
    documents = []
    count = 0
    for item in items:
        document = item.as_json()
        document["request"] = request_body(item, zone) if item.status == PLANNED else None
        count += item.status == PLANNED
        documents.append(document)
    plan = {
        "plan_version": PLAN_VERSION,
        "period": period,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "items": documents,
    }
    try:
        write_atomically(path, (json.dumps(plan, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise UsageError(
            f"Cannot write the plan to {path}: {exc.strerror or exc}. Choose a writable path."
        ) from None
    return count


def load_plan(path: Path) -> ReviewedPlan:
    """Read a plan file written by ``sync --dry-run --plan-out``.

    Raises:
        UsageError: the file cannot be read or is not such a plan.
    """
    bad = f"{path} is not a plan written by `infima-autotask sync --dry-run --plan-out`"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"Cannot read the plan {path}: {exc.strerror or exc}.") from None
    except ValueError:
        raise UsageError(f"{bad}: it is not JSON.") from None
    if not isinstance(document, dict) or document.get("plan_version") != PLAN_VERSION:
        raise UsageError(f"{bad}.")
    try:
        period = parse_month(str(document["period"]))
        writes = {}
        for entry in document["items"]:
            if entry["status"] != PLANNED:
                continue
            timeless = entry.get("psa") in COUNT_PSAS
            writes[whole_from_json(entry["client_id"])] = PlannedWrite(
                contract_service_id=whole_from_json(entry["contract_service_id"]),
                users=whole_from_json(entry["users"]),
                before=whole_from_json(entry["before"]),
                target=whole_from_json(entry["target"]),
                effective=_optional_text(entry["effective_date"], timeless),
                unit_price=_number(entry["unit_price"]),
                unit_cost=_number(entry["unit_cost"]),
                # A ConnectWise or Halo write carries no date: it takes effect when sent.
                sent_date=None if timeless else str(entry["request"]["effectiveDate"]),
            )
    except (KeyError, TypeError, ValueError, UsageError):  # WholeNumberError is a ValueError
        raise UsageError(f"{bad}: an item is missing a value or has a wrong one.") from None
    return ReviewedPlan(str(path), period, writes)


def _number(value: Any) -> float | None:
    """A rate as saved; null where the line carries none (a Halo subscription)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    return float(value)


def _optional_text(value: Any, timeless: bool) -> str | None:
    """An item's effective date as saved: a count PSA's is null, Autotask's a date."""
    if timeless:
        if value is not None:
            raise ValueError("a ConnectWise or Halo write has no effective date")
        return None
    return str(value)
