"""ConnectWise PSA: the REST client (``client``) and the records it reads (``model``)."""

from __future__ import annotations

from infima_autotask.connectwise.client import (
    CLOUD_API_HOSTS,
    PAGE_SIZE,
    ConnectWiseApi,
    ConnectWiseAuth,
    ConnectWiseCredentials,
    lookup_codebase,
    patch_body,
    quote_condition,
    site_origin,
)
from infima_autotask.connectwise.model import (
    Addition,
    Agreement,
    Company,
    SystemInfo,
    parse_addition,
    parse_agreement,
    parse_company,
    parse_system_info,
)
from infima_autotask.json_fields import parse_date

__all__ = [
    "CLOUD_API_HOSTS",
    "PAGE_SIZE",
    "Addition",
    "Agreement",
    "Company",
    "ConnectWiseApi",
    "ConnectWiseAuth",
    "ConnectWiseCredentials",
    "SystemInfo",
    "lookup_codebase",
    "parse_addition",
    "parse_agreement",
    "parse_company",
    "parse_date",
    "parse_system_info",
    "patch_body",
    "quote_condition",
    "site_origin",
]
