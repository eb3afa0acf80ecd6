"""HaloPSA: the REST client (``client``) and the records it reads (``model``)."""

from __future__ import annotations

from infima_autotask.halo.client import (
    PAGE_SIZE,
    SCOPES,
    WRITE_SCOPE,
    HaloApi,
    HaloCredentials,
    count_body,
    error_text,
    halo_base,
)
from infima_autotask.halo.model import (
    HaloClient,
    Licence,
    RecurringLine,
    parse_client,
    parse_licence,
    parse_recurring_lines,
)

__all__ = [
    "PAGE_SIZE",
    "SCOPES",
    "WRITE_SCOPE",
    "HaloApi",
    "HaloClient",
    "HaloCredentials",
    "Licence",
    "RecurringLine",
    "count_body",
    "error_text",
    "halo_base",
    "parse_client",
    "parse_licence",
    "parse_recurring_lines",
]
