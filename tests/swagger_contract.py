"""Check requests the tool sent against Autotask's official Swagger 2.0 description.

The description is read at test time from ``../shared/reference/`` beside the clone (never
copied into the project). Property names there are PascalCase; the wire is camelCase, so names
are compared without case.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SWAGGER = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "autotask-rest-v1-swagger.json"
)

_JSON_TYPES = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@cache
def swagger() -> dict[str, Any]:
    return json.loads(SWAGGER.read_text(encoding="utf-8"))


@cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    routes = []
    for path in swagger()["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(path.lower()))
        routes.append((re.compile(f"^{pattern}$"), path))
    return routes


def find_operation(method: str, url_path: str) -> tuple[str, dict[str, Any]]:
    """The Swagger path and operation for a request path (``/atservicesrest/v1.0/...``).

    A ``query/next`` page link is the documented paging of ``query`` (POSTed again with the
    same body), so it is checked as ``query``.
    """
    path = urlsplit(url_path).path.lower()
    base = swagger()["basePath"].lower()
    if path.startswith(base):
        path = path[len(base) :]
    path = re.sub(r"/query/next$", "/query", path)
    for pattern, original in _routes():
        if pattern.match(path):
            operation = swagger()["paths"][original].get(method.lower())
            if operation is None:
                raise AssertionError(f"{method} is not allowed on {original}")
            return original, operation
    raise AssertionError(f"no path in the Swagger description matches {path}")


def _schema(ref: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in ref:
        return swagger()["definitions"][ref["$ref"].rsplit("/", 1)[-1]]
    return ref


def _check_type(name: str, value: Any, schema: dict[str, Any]) -> None:
    if value is None:
        return
    expected = schema.get("type")
    if expected is None:
        return
    allowed = _JSON_TYPES[expected]
    if isinstance(value, bool) and expected != "boolean":
        raise AssertionError(f"{name}: boolean where the model wants {expected}")
    if not isinstance(value, allowed):
        raise AssertionError(f"{name}: {type(value).__name__} where the model wants {expected}")
    if expected == "integer" and schema.get("format") == "int32" and not -(2**31) <= value < 2**31:
        raise AssertionError(f"{name}: {value} does not fit int32")


def check_model(body: Any, model: dict[str, Any], where: str) -> None:
    """Strict: every property known (case-insensitively) and of the right type."""
    if not isinstance(body, dict):
        raise AssertionError(f"{where}: body is not an object")
    properties = {key.lower(): (key, value) for key, value in model.get("properties", {}).items()}
    for key, value in body.items():
        if key.lower() not in properties:
            raise AssertionError(f"{where}: unknown property {key!r}")
        name, schema = properties[key.lower()]
        if schema.get("readOnly"):
            raise AssertionError(f"{where}: read-only property {name!r} sent")
        _check_type(f"{where}.{name}", value, schema)


def _check_filter(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise AssertionError(f"{where}: a filter must be an object")
    known = {"op", "field", "udf", "value", "items"}
    unknown = set(item) - known
    if unknown:
        raise AssertionError(f"{where}: unknown filter keys {sorted(unknown)}")
    if not isinstance(item.get("op"), str):
        raise AssertionError(f"{where}: filter without op")
    value = item.get("value")
    scalars = (str, int, float, bool)
    is_list = isinstance(value, list) and all(isinstance(v, scalars) for v in value)
    if value is not None and not isinstance(value, scalars) and not is_list:
        raise AssertionError(f"{where}: filter value must be a scalar or a list of scalars")
    for child in item.get("items") or []:
        _check_filter(child, where)


def check_request(method: str, path: str, body: Any) -> None:
    """Raise AssertionError when a request does not fit the official description."""
    original, operation = find_operation(method, path)
    where = f"{method} {original}"
    body_params = [p for p in operation.get("parameters", []) if p.get("in") == "body"]
    if not body_params:
        if body not in (None, {}):
            raise AssertionError(f"{where}: a body was sent where none is expected")
        return
    model = _schema(body_params[0]["schema"])
    if original.lower().endswith("/query"):
        check_model(body, model, where)  # QueryModel: MaxRecords, IncludeFields, Filter
        for item in body.get("filter") or body.get("Filter") or []:
            _check_filter(item, where)
        return
    check_model(body, model, where)
