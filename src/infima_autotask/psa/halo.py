"""HaloPSA in this version: its mappings are reported, never sent anywhere."""

from __future__ import annotations

from infima_autotask.config import ClientMapping
from infima_autotask.sync import PlanItem, UserCount, failed_item

NOT_SUPPORTED = "HaloPSA is not supported by this version yet"


def plan_halo(mapping: ClientMapping, count: UserCount | None) -> PlanItem:
    """A Halo mapping's item: failed, saying this version cannot write it."""
    return failed_item(mapping, count, f"{NOT_SUPPORTED}; nothing was written")
