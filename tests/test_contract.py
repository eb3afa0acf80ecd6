"""The Swagger contract checker itself: it accepts what Autotask documents and refuses the rest."""

from __future__ import annotations

import pytest
from swagger_contract import SWAGGER, check_request

pytestmark = pytest.mark.skipif(not SWAGGER.exists(), reason=f"no Swagger file at {SWAGGER}")

ADJUSTMENT = {
    "contractID": 29684001,
    "contractServiceID": 29685100,
    "serviceID": 30012,
    "effectiveDate": "2026-12-01T00:00:00",
    "unitChange": 2,
    "adjustedUnitPrice": 4.5,
    "adjustedUnitCost": 2.25,
}
BASE = "/atservicesrest/v1.0/"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", BASE + "ContractServiceAdjustments", ADJUSTMENT),
        ("POST", BASE + "ContractServiceUnits/query", {"maxRecords": 500, "filter": []}),
        (
            "POST",
            BASE + "Contracts/query/next?paging=abc",
            {"maxRecords": 500, "filter": [{"op": "in", "field": "id", "value": [1, 2]}]},
        ),
        ("GET", BASE + "Companies/29683501", None),
        ("GET", BASE + "ThresholdInformation", None),
        ("GET", BASE + "zoneInformation?user=a@b.c", None),
        ("GET", BASE + "Contracts/entityInformation/fields", None),
    ],
)
def test_documented_requests_pass(method, path, body):
    check_request(method, path, body)


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("POST", BASE + "ContractServiceAdjustments", {**ADJUSTMENT, "units": 3}, "unknown"),
        ("POST", BASE + "ContractServiceAdjustments", {**ADJUSTMENT, "unitChange": "2"}, "str"),
        ("POST", BASE + "ContractServiceAdjustments", {**ADJUSTMENT, "unitChange": 1.5}, "float"),
        ("POST", BASE + "ContractServiceAdjustments", {**ADJUSTMENT, "serviceID": True}, "bool"),
        ("GET", BASE + "ContractServiceAdjustments/1", None, "no path"),
        ("DELETE", BASE + "Contracts/5", None, "not allowed"),
        ("POST", BASE + "Contracts/query", {"maxRecords": 5, "sort": "id"}, "unknown"),
        (
            "POST",
            BASE + "Contracts/query",
            {"filter": [{"op": "eq", "field": "id", "value": {"IntegerValue": 1}}]},
            "scalar",
        ),
    ],
)
def test_undocumented_requests_fail(method, path, body, message):
    with pytest.raises(AssertionError, match=message):
        check_request(method, path, body)
