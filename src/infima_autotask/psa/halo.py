"""HaloPSA in this version: its mappings are reported, never sent anywhere."""

from __future__ import annotations

from infima_autotask.config import HALO, ClientMapping
from infima_autotask.statuses import FAILED
from infima_autotask.sync import PlanItem, UserCount

NOT_SUPPORTED = "HaloPSA is not supported by this version yet"


def plan_halo(mapping: ClientMapping, count: UserCount | None) -> PlanItem:
    """A Halo mapping's item: failed, saying this version cannot write it."""
    return PlanItem(
        client_id=mapping.client_id,
        client_name=(count.name if count is not None else "") or mapping.client_name or "",
        contract_id=mapping.contract_id,
        contract_service_id=mapping.contract_service_id,
        service_id=mapping.service_id,
        users=count.users if count is not None else None,
        target=None,
        before=None,
        after=None,
        change=None,
        unit_price=None,
        unit_cost=None,
        new_unit_cost=None,
        status=FAILED,
        message=f"{NOT_SUPPORTED}; nothing was written",
        account_name=mapping.account_name or "",
        service_name=mapping.service_name or "",
        psa=HALO,
    )
