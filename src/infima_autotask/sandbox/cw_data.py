"""The ConnectWise simulator's data: seed companies, agreements and additions.

Records are stored as they travel on the wire (ConnectWise's OpenAPI names, dates as
``YYYY-MM-DDT00:00:00Z``), so the server answers without converting. Dates are relative to
``today`` (the sandbox's). Seed IDs (module constants below):

==========================  =======  =========  ========  ====================================
company                     company  agreement  addition  notes
==========================  =======  =========  ========  ====================================
Juniper Dental              250      3311       88412     INFIMA product, 18; INFIMA client 109
                                                          (20 active): the demo's mapping
                                                88413     Managed Backup, 18
Kestrel Accounting          251      3312       88420     9; this month already invoiced
                                                          (nextInvoiceDate: next month's 1st)
Lumen Labs                  252      3313       88430     5 } two additions of the INFIMA
                                                88431     7 } product on one agreement
Maple Clinic                253      3314       88440     11; agreement Expired last month
                                     3315       88450     11; the renewal, from this month's 1st
Nimbus Realty               254      3316       88460     4; agreement Cancelled
                                     3317       88470     6; addition cancelled last month
                                                88471     6; the active one of that product
Juniper Dental (deleted)    255      (in the recycle bin: deletedFlag, same name as 250)
Onyx Partners               256      (no agreements)
==========================  =======  =========  ========  ====================================

Every agreement but 3312 has ``nextInvoiceDate`` on this month's 1st: its invoice for this
month is not created yet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .data import JUNIPER_CLIENT_ID, SandboxState, add_months, month_end

CODEBASE = "v2025_1/"
MOVED_CODEBASE = "v2025_2/"  # where ``ConnectWiseState.move_codebase()`` sends it
COMPANY_ID = "sandboxmsp"  # the login company id (case-sensitive)
SYSTEM_VERSION = "v2025.1.104217"

INFIMA_PRODUCT_ID = 7001
INFIMA_PRODUCT_IDENTIFIER = "INFIMA-SAT"
INFIMA_PRODUCT_DESCRIPTION = "INFIMA Security Awareness Training"
INFIMA_UNIT_PRICE = 4.5
INFIMA_UNIT_COST = 2.25
BACKUP_PRODUCT_ID = 7002
BACKUP_PRODUCT_IDENTIFIER = "MANAGED-BACKUP"

JUNIPER_COMPANY_ID = 250
KESTREL_COMPANY_ID = 251
LUMEN_COMPANY_ID = 252
MAPLE_COMPANY_ID = 253
NIMBUS_COMPANY_ID = 254
JUNIPER_DELETED_COMPANY_ID = 255  # deletedFlag: a recycle-bin duplicate of 250's name
ONYX_COMPANY_ID = 256

JUNIPER_AGREEMENT_ID = 3311
KESTREL_AGREEMENT_ID = 3312  # this month's invoice already created
LUMEN_AGREEMENT_ID = 3313  # two additions of the INFIMA product
MAPLE_OLD_AGREEMENT_ID = 3314  # Expired at the end of last month
MAPLE_RENEWAL_AGREEMENT_ID = 3315  # the renewal, from this month's 1st
NIMBUS_CANCELLED_AGREEMENT_ID = 3316  # cancelledFlag, agreementStatus Cancelled
NIMBUS_AGREEMENT_ID = 3317  # one cancelled and one active addition of the product

JUNIPER_ADDITION_ID = 88412
JUNIPER_BACKUP_ADDITION_ID = 88413
KESTREL_ADDITION_ID = 88420
LUMEN_FIRST_ADDITION_ID = 88430
LUMEN_SECOND_ADDITION_ID = 88431
MAPLE_OLD_ADDITION_ID = 88440
MAPLE_RENEWAL_ADDITION_ID = 88450
NIMBUS_CANCELLED_AGREEMENT_ADDITION_ID = 88460
NIMBUS_CANCELLED_ADDITION_ID = 88470  # cancelledDate: last day of last month
NIMBUS_ADDITION_ID = 88471

_FIRST_NEW_ADDITION_ID = 89_000_001
# ``generate``'s ids: far from the seed's and from what a POST would create.
_GEN_COMPANY_BASE = 500_000
_GEN_AGREEMENT_BASE = 600_000
_GEN_ADDITION_BASE = 700_000

# Addition fields a PUT may carry; those not sent are reset (PUT replaces the record).
ADDITION_FIELDS = (
    "product",
    "quantity",
    "lessIncluded",
    "unitPrice",
    "unitCost",
    "billCustomer",
    "effectiveDate",
    "cancelledDate",
    "taxableFlag",
    "serialNumber",
    "invoiceDescription",
    "purchaseItemFlag",
    "specialOrderFlag",
    "description",
    "billedQuantity",
    "uom",
    "extPrice",
    "extCost",
    "sequenceNumber",
    "margin",
    "prorateCost",
    "proratePrice",
    "extendedProrateCost",
    "extendedProratePrice",
    "prorateCurrentPeriodFlag",
    "opportunity",
    "agreementStatus",
    "invoiceGrouping",
    "customFields",
)
CONCURRENT_MOMENTS = ("after-get", "before-patch", "after-patch")


def wire_date(day: date | None) -> str | None:
    """``day`` as ConnectWise writes a date."""
    return None if day is None else f"{day.isoformat()}T00:00:00Z"


def now_stamp() -> str:
    """The current instant as ConnectWise writes ``_info.lastUpdated``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ConcurrentWrite:
    """Another writer (INFIMA's own nightly sync) setting an addition's quantity.

    ``moment``: ``after-get`` (right after the next read of that addition is answered:
    between the tool's read and its write), ``before-patch`` (just before the next PATCH
    of it is applied) or ``after-patch`` (just after it was applied and answered).
    """

    addition_id: int
    quantity: float
    moment: str


@dataclass
class ConnectWiseState:
    """Everything the ConnectWise simulator serves. Hold ``lock`` while reading or changing.

    Knobs: ``codebase`` (``move_codebase()`` makes the old one answer 404), ``role``
    (``full``; ``read-only``: writes answer 403; ``none``: everything answers 403) and
    ``page_cap`` (serve at most that many records a page, to exercise ``Link`` paging).
    What the tool must never do is recorded: ``created`` (POST), ``replaced`` (PUT) and
    ``deleted`` (DELETE); ``patches`` lists every PATCH applied and ``audit`` every change.
    """

    today: date
    codebase: str = CODEBASE
    role: str = "full"
    page_cap: int | None = None
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    agreements: dict[int, dict[str, Any]] = field(default_factory=dict)
    additions: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    replaced: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    concurrent: list[ConcurrentWrite] = field(default_factory=list)
    next_addition_id: int = _FIRST_NEW_ADDITION_ID
    generated: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def this_month(self) -> date:
        return self.today.replace(day=1)

    def move_codebase(self, codebase: str = MOVED_CODEBASE) -> None:
        """Serve the API under another codebase from now on (the old one answers 404)."""
        with self.lock:
            self.codebase = codebase

    def concurrent_write(self, addition_id: int, quantity: float, moment: str) -> None:
        """Let another writer set an addition's quantity once, at ``moment``."""
        if moment not in CONCURRENT_MOMENTS:
            raise ValueError(f"moment must be one of {CONCURRENT_MOMENTS}, not {moment!r}")
        with self.lock:
            if addition_id not in self.additions:
                raise ValueError(f"no addition {addition_id}")
            self.concurrent.append(ConcurrentWrite(addition_id, float(quantity), moment))

    def take_concurrent(self, addition_id: int, moment: str) -> ConcurrentWrite | None:
        """Consume the first concurrent write of that addition at that moment, if any."""
        with self.lock:
            for write in self.concurrent:
                if write.addition_id == addition_id and write.moment == moment:
                    self.concurrent.remove(write)
                    return write
        return None

    def quantity(self, addition_id: int) -> float | None:
        """An addition's current quantity (KeyError for an unknown addition)."""
        with self.lock:
            value = self.additions[addition_id]["quantity"]
            return None if value is None else float(value)

    # --- building records ------------------------------------------------------------------

    def add_product(self, product_id: int, identifier: str, description: str) -> dict[str, Any]:
        with self.lock:
            record = {"id": product_id, "identifier": identifier, "description": description}
            self.products[product_id] = record
            return record

    def add_company(
        self, company_id: int, identifier: str, name: str, *, deleted: bool = False
    ) -> dict[str, Any]:
        with self.lock:
            record: dict[str, Any] = {
                "id": company_id,
                "identifier": identifier,
                "name": name,
                "status": {"id": 1, "name": "Active"},
                "types": [{"id": 1, "name": "Client"}],
                "deletedFlag": deleted,
                "dateDeleted": wire_date(add_months(self.this_month, -2)) if deleted else None,
                "_info": {"lastUpdated": "2025-01-15T10:00:00Z"},
            }
            self.companies[company_id] = record
            return record

    def add_agreement(
        self,
        agreement_id: int,
        company_id: int,
        name: str,
        *,
        start: date,
        end: date | None,
        status: str = "Active",
        cancelled_on: date | None = None,
        next_invoice: date | None = None,
        billing_cycle: str | None = "Monthly",
    ) -> dict[str, Any]:
        """Add an agreement; ``next_invoice`` defaults to this month's 1st (not invoiced)."""
        with self.lock:
            company = self.companies[company_id]
            record: dict[str, Any] = {
                "id": agreement_id,
                "name": name,
                "type": {"id": 5, "name": "Managed Services"},
                "company": {
                    "id": company_id,
                    "identifier": company["identifier"],
                    "name": company["name"],
                },
                "contact": {"id": 1000 + company_id, "name": "Billing Contact"},
                "parentAgreement": None,
                "startDate": wire_date(start),
                "endDate": wire_date(end),
                "noEndingDateFlag": end is None,
                "cancelledFlag": cancelled_on is not None,
                "dateCancelled": wire_date(cancelled_on),
                "reasonCancelled": "Client left" if cancelled_on else None,
                "billingCycle": (
                    {"id": 2, "name": billing_cycle} if billing_cycle is not None else None
                ),
                "billStartDate": wire_date(start),
                "nextInvoiceDate": wire_date(next_invoice or self.this_month),
                "periodType": "Current",
                "prorateFlag": False,
                "invoiceProratedAdditionsFlag": False,
                "agreementStatus": status,
                "_info": {"lastUpdated": "2025-01-15T10:00:00Z"},
            }
            self.agreements[agreement_id] = record
            return record

    def add_addition(
        self,
        addition_id: int,
        agreement_id: int,
        product_id: int,
        quantity: float,
        *,
        unit_price: float | None = INFIMA_UNIT_PRICE,
        unit_cost: float | None = INFIMA_UNIT_COST,
        effective: date | None = None,
        cancelled: date | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            product = self.products[product_id]
            agreement = self.agreements[agreement_id]
            record: dict[str, Any] = {
                "id": addition_id,
                "product": {"id": product_id, "identifier": product["identifier"]},
                "agreementId": agreement_id,
                "quantity": float(quantity),
                "lessIncluded": 0.0,
                "unitPrice": unit_price,
                "unitCost": unit_cost,
                "billCustomer": "Billable",
                "effectiveDate": wire_date(effective or self._start_of(agreement)),
                "cancelledDate": wire_date(cancelled),
                "taxableFlag": False,
                "serialNumber": None,
                "invoiceDescription": product["description"],
                "purchaseItemFlag": False,
                "specialOrderFlag": False,
                "description": product["description"],
                "billedQuantity": float(quantity),
                "uom": "Each",
                "sequenceNumber": float(len(self.additions) + 1),
                "prorateCurrentPeriodFlag": False,
                "agreementStatus": "Cancelled" if cancelled else agreement["agreementStatus"],
                "_info": {"lastUpdated": "2025-01-15T10:00:00Z", "updatedBy": "admin"},
            }
            reprice(record)
            self.additions[addition_id] = record
            return record

    @staticmethod
    def _start_of(agreement: dict[str, Any]) -> date:
        return date.fromisoformat(str(agreement["startDate"])[:10])


def reprice(record: dict[str, Any]) -> None:
    """Recompute an addition's extended price, cost and margin from its unit amounts."""
    quantity = record.get("quantity")
    price, cost = record.get("unitPrice"), record.get("unitCost")
    ext_price = None if quantity is None or price is None else round(quantity * price, 2)
    ext_cost = None if quantity is None or cost is None else round(quantity * cost, 2)
    record["extPrice"] = ext_price
    record["extCost"] = ext_cost
    record["margin"] = (
        None if ext_price is None or ext_cost is None else round(ext_price - ext_cost, 2)
    )


def seed(state: ConnectWiseState) -> None:
    """Fill ``state`` with the companies, agreements and additions of the module docstring."""
    this = state.this_month
    previous = add_months(this, -1)
    start = add_months(this, -12)
    end = month_end(add_months(this, 11))
    name = f"Managed Services {this.year}"
    with state.lock:
        state.add_product(INFIMA_PRODUCT_ID, INFIMA_PRODUCT_IDENTIFIER, INFIMA_PRODUCT_DESCRIPTION)
        state.add_product(BACKUP_PRODUCT_ID, BACKUP_PRODUCT_IDENTIFIER, "Managed Backup")

        state.add_company(JUNIPER_COMPANY_ID, "JuniperDental", "Juniper Dental")
        state.add_company(KESTREL_COMPANY_ID, "KestrelAcct", "Kestrel Accounting")
        state.add_company(LUMEN_COMPANY_ID, "LumenLabs", "Lumen Labs")
        state.add_company(MAPLE_COMPANY_ID, "MapleClinic", "Maple Clinic")
        state.add_company(NIMBUS_COMPANY_ID, "NimbusRealty", "Nimbus Realty")
        state.add_company(
            JUNIPER_DELETED_COMPANY_ID, "JuniperDental1", "Juniper Dental", deleted=True
        )
        state.add_company(ONYX_COMPANY_ID, "OnyxPartners", "Onyx Partners")

        state.add_agreement(JUNIPER_AGREEMENT_ID, JUNIPER_COMPANY_ID, name, start=start, end=end)
        state.add_addition(JUNIPER_ADDITION_ID, JUNIPER_AGREEMENT_ID, INFIMA_PRODUCT_ID, 18)
        state.add_addition(
            JUNIPER_BACKUP_ADDITION_ID,
            JUNIPER_AGREEMENT_ID,
            BACKUP_PRODUCT_ID,
            18,
            unit_price=3.0,
            unit_cost=1.0,
        )

        state.add_agreement(
            KESTREL_AGREEMENT_ID,
            KESTREL_COMPANY_ID,
            name,
            start=start,
            end=end,
            next_invoice=add_months(this, 1),
        )
        state.add_addition(KESTREL_ADDITION_ID, KESTREL_AGREEMENT_ID, INFIMA_PRODUCT_ID, 9)

        state.add_agreement(LUMEN_AGREEMENT_ID, LUMEN_COMPANY_ID, name, start=start, end=end)
        state.add_addition(LUMEN_FIRST_ADDITION_ID, LUMEN_AGREEMENT_ID, INFIMA_PRODUCT_ID, 5)
        state.add_addition(LUMEN_SECOND_ADDITION_ID, LUMEN_AGREEMENT_ID, INFIMA_PRODUCT_ID, 7)

        state.add_agreement(
            MAPLE_OLD_AGREEMENT_ID,
            MAPLE_COMPANY_ID,
            f"Managed Services {previous.year} (ended)",
            start=add_months(this, -13),
            end=month_end(previous),
            status="Expired",
            next_invoice=this,
        )
        state.add_addition(MAPLE_OLD_ADDITION_ID, MAPLE_OLD_AGREEMENT_ID, INFIMA_PRODUCT_ID, 11)
        state.add_agreement(
            MAPLE_RENEWAL_AGREEMENT_ID,
            MAPLE_COMPANY_ID,
            name,
            start=this,
            end=month_end(add_months(this, 11)),
        )
        state.add_addition(
            MAPLE_RENEWAL_ADDITION_ID, MAPLE_RENEWAL_AGREEMENT_ID, INFIMA_PRODUCT_ID, 11
        )

        state.add_agreement(
            NIMBUS_CANCELLED_AGREEMENT_ID,
            NIMBUS_COMPANY_ID,
            f"Managed Services {previous.year} (cancelled)",
            start=start,
            end=end,
            status="Cancelled",
            cancelled_on=previous + timedelta(days=14),
        )
        state.add_addition(
            NIMBUS_CANCELLED_AGREEMENT_ADDITION_ID,
            NIMBUS_CANCELLED_AGREEMENT_ID,
            INFIMA_PRODUCT_ID,
            4,
        )
        state.add_agreement(NIMBUS_AGREEMENT_ID, NIMBUS_COMPANY_ID, name, start=start, end=None)
        state.add_addition(
            NIMBUS_CANCELLED_ADDITION_ID,
            NIMBUS_AGREEMENT_ID,
            INFIMA_PRODUCT_ID,
            6,
            cancelled=month_end(previous),
        )
        state.add_addition(
            NIMBUS_ADDITION_ID, NIMBUS_AGREEMENT_ID, INFIMA_PRODUCT_ID, 6, effective=this
        )


def seed_mapping(today: date | None = None) -> dict[str, Any]:
    """The demo's ConnectWise mapping (INFIMA client 109 to Juniper Dental's addition), in
    SPEC §10's terms: ``psa`` and that PSA's ids."""
    year = (today or date.today()).year
    return {
        "client_id": JUNIPER_CLIENT_ID,
        "client_name": "Juniper Dental",
        "psa": "connectwise",
        "account_id": JUNIPER_COMPANY_ID,
        "account_name": "Juniper Dental",
        "agreement_id": JUNIPER_AGREEMENT_ID,
        "agreement_name": f"Managed Services {year}",
        "addition_id": JUNIPER_ADDITION_ID,
        "product_id": INFIMA_PRODUCT_ID,
        "product_name": INFIMA_PRODUCT_DESCRIPTION,
    }


def generate(
    state: ConnectWiseState,
    infima: SandboxState,
    n: int,
    *,
    changed_fraction: float = 0.3,
    first_client_id: int = 5000,
) -> list[dict[str, Any]]:
    """Add ``n`` companies, each with an active agreement, one addition of the INFIMA product
    and a matching INFIMA client in ``infima``; ``round(n * changed_fraction)`` of them have an
    active count different from the addition's quantity. Returns their SPEC §10 mappings.
    Raises ValueError for a bad argument or a client id already used.
    """
    if n < 0 or not 0.0 <= changed_fraction <= 1.0:
        raise ValueError("n must be >= 0 and changed_fraction between 0 and 1")
    changed_total = round(n * changed_fraction)
    this = state.this_month
    start = add_months(this, -12)
    end = month_end(add_months(this, 11))
    agreement_name = f"Managed Services {this.year}"
    mappings: list[dict[str, Any]] = []
    with state.lock, infima.lock:
        clashes = set(range(first_client_id, first_client_id + n)) & infima.infima_clients.keys()
        if clashes:
            raise ValueError(f"INFIMA client ids already used: {sorted(clashes)[:5]}")
        if INFIMA_PRODUCT_ID not in state.products:
            state.add_product(
                INFIMA_PRODUCT_ID, INFIMA_PRODUCT_IDENTIFIER, INFIMA_PRODUCT_DESCRIPTION
            )
        for i in range(n):
            k = state.generated + i
            client_id = first_client_id + i
            name = f"CW Client {k + 1}"
            company_id = _GEN_COMPANY_BASE + k
            agreement_id = _GEN_AGREEMENT_BASE + k
            addition_id = _GEN_ADDITION_BASE + k
            quantity = 1 + (k * 37) % 240
            # Spread the changed clients evenly over the range; small rises only.
            changed = (i + 1) * changed_total // n > i * changed_total // n
            active = quantity + 1 + k % 3 if changed else quantity
            state.add_company(company_id, f"CWClient{k + 1}", name)
            state.add_agreement(agreement_id, company_id, agreement_name, start=start, end=end)
            state.add_addition(addition_id, agreement_id, INFIMA_PRODUCT_ID, quantity)
            infima.add_infima_client(client_id, name, active, k % 3)
            mappings.append(
                {
                    "client_id": client_id,
                    "client_name": name,
                    "psa": "connectwise",
                    "account_id": company_id,
                    "account_name": name,
                    "agreement_id": agreement_id,
                    "agreement_name": agreement_name,
                    "addition_id": addition_id,
                    "product_id": INFIMA_PRODUCT_ID,
                    "product_name": INFIMA_PRODUCT_DESCRIPTION,
                }
            )
        state.generated += n
    return mappings
