"""The YAML config file (SPEC §6): strict validation into frozen dataclasses, atomic save.

Every problem in a file is collected and reported at once in a ``ConfigError`` whose
``details`` hold one ``<key path>: <what is wrong>`` line per problem.
"""

from __future__ import annotations

import difflib
import logging
import math
import types
import zoneinfo
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError
from .fsutil import write_atomically
from .whole_number import MAX_INT

log = logging.getLogger(__name__)

DEFAULT_INFIMA_URL = "https://app.infimasecapis.com"
CONFIG_VERSION = 1

_VALIDATE_HINT = "fix them and run `infima-autotask validate`."
_NOT_FOUND_HINT = "Run `infima-autotask connect` to create it, or pass --config PATH."


@dataclass(frozen=True)
class AutotaskSettings:
    """The `autotask` section: who the tool is and where the zone lives (no secret here)."""

    username: str | None = None
    integration_code: str | None = None
    api_url: str | None = None
    # IANA name of the tenant's time zone: the effectiveDate of a write lands on its date there.
    timezone: str | None = None


@dataclass(frozen=True)
class InfimaSettings:
    """The `infima` section."""

    api_url: str = DEFAULT_INFIMA_URL
    counts_file: str | None = None
    count_users_without_status: bool = False


@dataclass(frozen=True)
class SyncSettings:
    """The `sync` section: period time zone, cost overwrite, safety limits and proration."""

    timezone: str | None = None
    overwrite_cost: bool = False
    unit_cost: float | None = None
    max_decrease_percent: float = 50
    max_increase_percent: float | None = None
    allow_zero: bool = False
    max_api_usage_percent: float = 80
    # True: write on the 1st even inside a billing period (a proration Autotask cannot delete).
    prorate: bool = False


@dataclass(frozen=True)
class Mapping:
    """One INFIMA client mapped to one Autotask Contract Service, with its overrides."""

    client_id: int
    account_id: int
    contract_id: int
    contract_service_id: int
    service_id: int
    client_name: str | None = None
    account_name: str | None = None
    contract_name: str | None = None
    service_name: str | None = None
    enabled: bool = True
    exclude_users: int = 0
    min_units: int | None = None
    max_units: int | None = None
    unit_cost: float | None = None
    overwrite_cost: bool | None = None
    prorate: bool | None = None
    note: str | None = None

    def effective_overwrite_cost(self, sync: SyncSettings) -> bool:
        """The mapping's `overwrite_cost`, else the `sync` default."""
        return sync.overwrite_cost if self.overwrite_cost is None else self.overwrite_cost

    def effective_prorate(self, sync: SyncSettings) -> bool:
        """The mapping's `prorate`, else the `sync` default."""
        return sync.prorate if self.prorate is None else self.prorate

    def effective_unit_cost(self, sync: SyncSettings) -> float | None:
        """The mapping's `unit_cost`, else the `sync` default."""
        return sync.unit_cost if self.unit_cost is None else self.unit_cost


@dataclass(frozen=True)
class Config:
    """The whole config file."""

    version: int = CONFIG_VERSION
    state_dir: str | None = None
    autotask: AutotaskSettings = field(default_factory=AutotaskSettings)
    infima: InfimaSettings = field(default_factory=InfimaSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    mappings: tuple[Mapping, ...] = ()

    def mapping_for(self, client_id: int) -> Mapping | None:
        """The mapping of `client_id`, or None."""
        for mapping in self.mappings:
            if mapping.client_id == client_id:
                return mapping
        return None

    def with_mapping(self, mapping: Mapping) -> Config:
        """A copy with `mapping` replacing that client's mapping in place, or appended."""
        mappings = list(self.mappings)
        for index, existing in enumerate(mappings):
            if existing.client_id == mapping.client_id:
                mappings[index] = mapping
                break
        else:
            mappings.append(mapping)
        return replace(self, mappings=tuple(mappings))

    def without_mapping(self, client_id: int) -> Config:
        """A copy without the mapping of `client_id`; KeyError when there is none."""
        kept = tuple(m for m in self.mappings if m.client_id != client_id)
        if len(kept) == len(self.mappings):
            raise KeyError(client_id)
        return replace(self, mappings=kept)


# --- key order of SPEC §6 (also the known keys of each level) -------------------------

_TOP_KEYS = ("version", "state_dir", "autotask", "infima", "sync", "mappings")
_AUTOTASK_KEYS = ("username", "integration_code", "api_url", "timezone")
_INFIMA_KEYS = ("api_url", "counts_file", "count_users_without_status")
_SYNC_KEYS = (
    "timezone",
    "overwrite_cost",
    "unit_cost",
    "max_decrease_percent",
    "max_increase_percent",
    "allow_zero",
    "max_api_usage_percent",
    "prorate",
)
_MAPPING_KEYS = (
    "client_id",
    "client_name",
    "account_id",
    "account_name",
    "contract_id",
    "contract_name",
    "contract_service_id",
    "service_id",
    "service_name",
    "enabled",
    "exclude_users",
    "min_units",
    "max_units",
    "unit_cost",
    "overwrite_cost",
    "prorate",
    "note",
)
_ID_KEYS = ("client_id", "account_id", "contract_id", "contract_service_id", "service_id")
# Company 0 is real in Autotask: every tenant's own organization. Other ids start at 1.
_ZERO_ALLOWED_IDS = frozenset({"account_id"})


# --- validation ----------------------------------------------------------------------

_MISSING: Any = object()  # key absent from the document
_BAD: Any = object()  # value present but invalid (already reported)


def _describe(value: object) -> str:
    """A short, safe rendering of a bad value for a problem line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # repr() of a huge int raises ValueError on Python 3.11+ (int max str digits).
        return repr(value) if value.bit_length() <= 128 else "a very large number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _join(prefix: str, key: object) -> str:
    # A key with a line break or other unprintable text is quoted: it must not split the
    # indented problem line it appears in.
    if isinstance(key, str) and key and key.isprintable():
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{_describe(key)}]"


class _Section:
    """Reads one YAML mapping, reporting unknown keys and bad values into `problems`."""

    def __init__(
        self, data: dict[Any, Any], prefix: str, known: tuple[str, ...], problems: list[str]
    ) -> None:
        self.data = data
        self.prefix = prefix
        self.problems = problems
        for key in data:
            if key in known:
                continue
            message = "unknown key"
            if isinstance(key, str):
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if close:
                    message += f"; did you mean '{close[0]}'?"
            problems.append(f"{_join(prefix, key)}: {message}")

    def report(self, key: str, message: str) -> Any:
        self.problems.append(f"{_join(self.prefix, key)}: {message}")
        return _BAD

    def _get(self, key: str, *, required: bool = False) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING and required:
            return self.report(key, "missing (required)")
        return value

    def integer(
        self,
        key: str,
        default: Any = None,
        *,
        required: bool = False,
        positive: bool = False,
        nullable: bool = False,
    ) -> Any:
        value = self._get(key, required=required)
        if value is _MISSING:
            return default
        if value is _BAD or (value is None and nullable):
            return value
        kind = "a positive integer" if positive else "an integer of 0 or more"
        if nullable:
            kind += ", or null"
        if not isinstance(value, int) or isinstance(value, bool):
            return self.report(key, f"must be {kind}, got {_describe(value)}")
        if value < (1 if positive else 0):
            return self.report(key, f"must be {kind}, got {_describe(value)}")
        if value > MAX_INT:
            return self.report(key, f"too large (at most {MAX_INT}), got {_describe(value)}")
        return value

    def number(
        self,
        key: str,
        default: Any,
        *,
        nullable: bool = False,
        low: float = 0,
        high: float | None = None,
        low_exclusive: bool = False,
    ) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        if high is None:
            kind = f"a number of {low:g} or more"
        elif low_exclusive:
            kind = f"a number greater than {low:g} and at most {high:g}"
        else:
            kind = f"a number from {low:g} to {high:g}"
        if nullable:
            kind += ", or null"
        bad = f"must be {kind}, got {_describe(value)}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return self.report(key, bad)
        if isinstance(value, int) and value.bit_length() > 63:
            return self.report(key, f"too large, got {_describe(value)}")
        if not math.isfinite(value):
            return self.report(key, f"must be a finite number, got {_describe(value)}")
        too_low = value <= low if low_exclusive else value < low
        if too_low or (high is not None and value > high):
            return self.report(key, bad)
        return value

    def boolean(self, key: str, default: Any, *, nullable: bool = False) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or (value is None and nullable):
            return value
        kind = "true, false or null" if nullable else "true or false"
        return self.report(key, f"must be {kind}, got {_describe(value)}")

    def string(
        self,
        key: str,
        default: Any = None,
        *,
        nullable: bool = True,
        non_empty: bool = False,
        url: bool = False,
    ) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if value is None and nullable:
            return None
        kind = "a non-empty string" if non_empty else "a string"
        if url:
            kind = "an http:// or https:// URL"
        if nullable:
            kind += " or null"
        if not isinstance(value, str):
            return self.report(key, f"must be {kind}, got {_describe(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return self.report(key, "contains characters that cannot be written as UTF-8")
        if non_empty and not value.strip():
            return self.report(key, f"must be {kind}, got {_describe(value)}")
        if url:
            scheme, sep, rest = value.partition("://")
            if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
                return self.report(key, f"must be {kind}, got {_describe(value)}")
        return value


def _sub_section(
    data: dict[Any, Any], key: str, known: tuple[str, ...], problems: list[str]
) -> _Section | None:
    value = data.get(key)
    if value is None:
        return _Section({}, key, known, problems)
    if not isinstance(value, dict):
        problems.append(f"{key}: must be a mapping of keys, got {_describe(value)}")
        return None
    return _Section(value, key, known, problems)


def _check_timezone(section: _Section) -> Any:
    value = section.string("timezone")
    if not isinstance(value, str):
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return section.report(
            "timezone", f"unknown IANA time zone {_describe(value)} (e.g. 'America/New_York')"
        )
    return value


def _parse_autotask(data: dict[Any, Any], problems: list[str]) -> AutotaskSettings | None:
    s = _sub_section(data, "autotask", _AUTOTASK_KEYS, problems)
    if s is None:
        return None
    return AutotaskSettings(
        username=s.string("username", non_empty=True),
        integration_code=s.string("integration_code", non_empty=True),
        api_url=s.string("api_url", url=True),
        timezone=_check_timezone(s),
    )


def _parse_infima(data: dict[Any, Any], problems: list[str]) -> InfimaSettings | None:
    s = _sub_section(data, "infima", _INFIMA_KEYS, problems)
    if s is None:
        return None
    return InfimaSettings(
        api_url=s.string("api_url", DEFAULT_INFIMA_URL, nullable=False, url=True),
        counts_file=s.string("counts_file", non_empty=True),
        count_users_without_status=s.boolean("count_users_without_status", False),
    )


def _parse_sync(data: dict[Any, Any], problems: list[str]) -> SyncSettings | None:
    s = _sub_section(data, "sync", _SYNC_KEYS, problems)
    if s is None:
        return None
    sync = SyncSettings(
        timezone=_check_timezone(s),
        overwrite_cost=s.boolean("overwrite_cost", False),
        unit_cost=s.number("unit_cost", None, nullable=True),
        max_decrease_percent=s.number("max_decrease_percent", 50, high=100),
        max_increase_percent=s.number("max_increase_percent", None, nullable=True),
        allow_zero=s.boolean("allow_zero", False),
        max_api_usage_percent=s.number(
            "max_api_usage_percent", 80, low=0, high=100, low_exclusive=True
        ),
        prorate=s.boolean("prorate", False),
    )
    if sync.overwrite_cost is True and sync.unit_cost is None:
        s.report("unit_cost", "required when sync.overwrite_cost is true")
    return sync


def _parse_mapping(
    entry: object, index: int, sync: SyncSettings | None, problems: list[str]
) -> Mapping | None:
    prefix = f"mappings[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{prefix}: must be a mapping of keys, got {_describe(entry)}")
        return None
    s = _Section(entry, prefix, _MAPPING_KEYS, problems)
    ids = {
        key: s.integer(key, required=True, positive=key not in _ZERO_ALLOWED_IDS)
        for key in _ID_KEYS
    }
    mapping = Mapping(
        client_id=ids["client_id"],
        account_id=ids["account_id"],
        contract_id=ids["contract_id"],
        contract_service_id=ids["contract_service_id"],
        service_id=ids["service_id"],
        client_name=s.string("client_name"),
        account_name=s.string("account_name"),
        contract_name=s.string("contract_name"),
        service_name=s.string("service_name"),
        enabled=s.boolean("enabled", True),
        exclude_users=s.integer("exclude_users", 0),
        min_units=s.integer("min_units", None, nullable=True),
        max_units=s.integer("max_units", None, nullable=True),
        unit_cost=s.number("unit_cost", None, nullable=True),
        overwrite_cost=s.boolean("overwrite_cost", None, nullable=True),
        prorate=s.boolean("prorate", None, nullable=True),
        note=s.string("note"),
    )
    low, high = mapping.min_units, mapping.max_units
    if isinstance(low, int) and isinstance(high, int) and low > high:
        s.report("min_units", f"{low} is greater than max_units {high}")
    # With sync.overwrite_cost inherited, a missing cost is already reported on sync.unit_cost.
    if (
        sync is not None
        and mapping.overwrite_cost is True
        and mapping.unit_cost is None
        and sync.unit_cost is None
    ):
        s.report("unit_cost", "required when overwrite_cost is true (here or in sync.unit_cost)")
    return mapping


def _check_unique(mappings: list[tuple[int, Mapping]], key: str, problems: list[str]) -> None:
    seen: dict[int, int] = {}
    for index, mapping in mappings:
        value = getattr(mapping, key)
        if not isinstance(value, int):
            continue
        if value in seen:
            problems.append(
                f"mappings[{index}].{key}: duplicate {key} {value}, also in mappings[{seen[value]}]"
            )
        else:
            seen[value] = index


def _validate(data: object, problems: list[str]) -> Config | None:
    if data is None:
        problems.append("(document): the file is empty")
        return None
    if not isinstance(data, dict):
        problems.append(
            f"(document): must be a mapping of keys (version, autotask, ...), got {_describe(data)}"
        )
        return None
    top = _Section(data, "", _TOP_KEYS, problems)
    version = data.get("version", _MISSING)
    if version is _MISSING:
        problems.append(f"version: missing (required; must be {CONFIG_VERSION})")
    elif not isinstance(version, int) or isinstance(version, bool) or version != CONFIG_VERSION:
        problems.append(f"version: must be {CONFIG_VERSION}, got {_describe(version)}")
    state_dir = top.string("state_dir", non_empty=True)
    autotask = _parse_autotask(data, problems)
    infima = _parse_infima(data, problems)
    sync = _parse_sync(data, problems)

    mappings: list[tuple[int, Mapping]] = []
    raw = data.get("mappings")
    if raw is not None and not isinstance(raw, list):
        problems.append(f"mappings: must be a list of mappings, got {_describe(raw)}")
    elif raw is not None:
        for index, entry in enumerate(raw):
            mapping = _parse_mapping(entry, index, sync, problems)
            if mapping is not None:
                mappings.append((index, mapping))
    _check_unique(mappings, "client_id", problems)
    _check_unique(mappings, "contract_service_id", problems)

    if problems or autotask is None or infima is None or sync is None:
        return None
    return Config(
        version=CONFIG_VERSION,
        state_dir=state_dir,
        autotask=autotask,
        infima=infima,
        sync=sync,
        mappings=tuple(m for _, m in mappings),
    )


def _invalid(source: str, problems: list[str]) -> ConfigError:
    count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    return ConfigError(f"Invalid config file {source} ({count}); {_VALIDATE_HINT}", problems)


def parse_config(data: object, source: str) -> Config:
    """Validate a loaded YAML document into a Config.

    Raises:
        ConfigError: listing every problem, one ``<key path>: <what is wrong>`` per line.
    """
    problems: list[str] = []
    config = _validate(data, problems)
    if config is None:
        raise _invalid(source, problems)
    return config


# --- loading -------------------------------------------------------------------------


if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:
    # libyaml parses a 5,000-mapping file several times faster; construction stays in Python.
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):
    """SafeLoader that reports duplicate keys (plain PyYAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self._paths: dict[int, str] = {}

    def load_document(self) -> object:
        """Compose the single document, note each mapping's key path, then construct it."""
        node = self.get_single_node()
        if node is None:
            return None
        self._note_paths(node)
        return self.construct_document(node)

    def _note_paths(self, root: yaml.Node) -> None:
        # Iterative, and each node once: aliases may share nodes (billion laughs).
        stack: list[tuple[yaml.Node, str]] = [(root, "")]
        while stack:
            node, path = stack.pop()
            if id(node) in self._paths:
                continue
            self._paths[id(node)] = path
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    stack.append((value_node, _join(path, key)))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    stack.append((item, f"{path}[{index}]"))

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (IndexError, KeyError, AttributeError):
            # PyYAML's own constructors fail like this on e.g. `!!int ''` or `!!bool maybe`.
            raise yaml.constructor.ConstructorError(
                None, None, f"could not read the value as the tag {node.tag!r}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # e.g. `!!map [1]`: PyYAML reports it
            return super().construct_mapping(node, deep=deep)
        seen: dict[Any, int] = {}
        path = self._paths.get(id(node), "")
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):  # e.g. `? !!set x`: PyYAML reports it
                continue
            if key in seen:
                where = f"lines {seen[key]} and {line}" if seen[key] != line else f"line {line}"
                self.duplicates.append(
                    f"{_join(path, key)}: duplicate key ({where}); keep only one"
                )
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
# Far below libyaml's limit (1000) and the pure-Python composer's recursion limit, far above
# any config (4 levels).
_EVENT_MAX_DEPTH = 100
_NO_KEY: Any = object()


class _Fallback(Exception):
    """The event reader leaves this document to the node loader (_StrictLoader)."""


class _Frame:
    """A mapping or sequence being filled by _EventReader."""

    __slots__ = ("container", "seen", "key", "raw_key", "step", "number")

    def __init__(self, container: dict[Any, Any] | list[Any], step: str | int, number: int):
        self.container: Any = container
        # Line of each key's first occurrence; None for a sequence.
        self.seen: dict[Any, int] | None = {} if isinstance(container, dict) else None
        self.key: Any = _NO_KEY
        self.raw_key = ""
        self.step = step  # raw key text or index of this container in its parent
        self.number = number  # order of appearance, for the order of duplicate reports


class _EventReader:
    """Builds the document straight from parser events: no node graph, a fraction of the memory.

    The node loader (_StrictLoader) stays the reference: whatever this reader does not
    reproduce exactly (errors of any kind, merge keys, tags on collections, keys that are
    not plain scalars, more than one document, deep nesting, recursive aliases, duplicate
    keys next to shared anchors) raises _Fallback, and the caller re-reads the text with
    the node loader, which gives today's result or error message.
    """

    def __init__(self, loader: _StrictLoader) -> None:
        self.loader = loader
        self.stack: list[_Frame] = []
        self.anchors: dict[str, Any] = {}
        self.root: Any = None
        self.containers = 0
        # An alias of a mapping or sequence: the node loader's key paths and report order
        # then depend on how it walks shared nodes, so duplicates go to the node loader.
        self.shared = False
        self.duplicates: list[tuple[int, int, str]] = []  # depth, container number, problem
        self.keys: dict[str, str] = {}

    def read(self) -> tuple[object, list[str]]:
        get_event: Any = self.loader.get_event
        documents = 0
        while True:
            event = get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                self._scalar(event)
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                self.stack.pop()
            elif kind is yaml.MappingStartEvent:
                self._open(event, {}, _MAP_TAG)
            elif kind is yaml.SequenceStartEvent:
                self._open(event, [], _SEQ_TAG)
            elif kind is yaml.AliasEvent:
                self._alias(event)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Fallback("more than one document")
            elif kind is yaml.StreamEndEvent:
                break
        if self.duplicates and self.shared:
            raise _Fallback("duplicate keys and shared anchors")
        # The node loader constructs breadth-first: shallower mappings report first.
        self.duplicates.sort(key=lambda item: (item[0], item[1]))
        return self.root, [problem for _, _, problem in self.duplicates]

    def _scalar(self, event: Any) -> None:
        loader: Any = self.loader
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            value: Any = event.value
        elif tag == _MERGE_TAG:
            raise _Fallback("merge key")
        else:
            # The same constructor yaml.safe_load would call; unknown and unsafe tags have
            # none here, and the node loader reports them.
            constructor = loader.yaml_constructors.get(tag)
            if constructor is None:
                raise _Fallback("tag without a constructor")
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            value = constructor(loader, node)
            if isinstance(value, types.GeneratorType):  # e.g. !!map on a scalar
                raise _Fallback("collection tag on a scalar")
        if event.anchor is not None:
            self._anchor(event.anchor, value)
        self._add(value, event.value, event)

    def _open(self, event: yaml.CollectionStartEvent, container: Any, default_tag: str) -> None:
        tag = event.tag
        if tag is not None and tag != "!" and tag != default_tag:
            raise _Fallback("tag on a collection")
        stack = self.stack
        if len(stack) >= _EVENT_MAX_DEPTH:
            raise _Fallback("deep nesting")
        step: str | int = ""
        if stack:
            parent = stack[-1]
            step = len(parent.container) if parent.seen is None else parent.raw_key
        if event.anchor is not None:
            self._anchor(event.anchor, container)
        self._add(container, None, event)
        self.containers += 1
        stack.append(_Frame(container, step, self.containers))

    def _alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor not in self.anchors:
            raise _Fallback("undefined alias")
        value = self.anchors[event.anchor]
        if isinstance(value, (dict, list)):
            if any(frame.container is value for frame in self.stack):
                raise _Fallback("recursive alias")
            self.shared = True
        self._add(value, None, event)

    def _anchor(self, name: str, value: Any) -> None:
        if name in self.anchors:
            raise _Fallback("anchor defined twice")
        self.anchors[name] = value

    def _add(self, value: Any, raw_key: str | None, event: Any) -> None:
        """Put `value` into the open container; `raw_key` is the scalar text, if a scalar."""
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        seen = frame.seen
        if seen is None:
            frame.container.append(value)
        elif frame.key is not _NO_KEY:
            frame.container[frame.key] = value
            frame.key = _NO_KEY
        elif raw_key is None:
            raise _Fallback("a key that is not a scalar, or an alias")
        else:
            line = event.start_mark.line + 1
            first = seen.get(value)
            if first is None:
                seen[value] = line
            else:
                where = f"lines {first} and {line}" if first != line else f"line {line}"
                problem = f"{_join(self._path(), value)}: duplicate key ({where}); keep only one"
                self.duplicates.append((len(self.stack) - 1, frame.number, problem))
            # One string object per distinct key text: 5,000 mappings repeat the same 16 keys.
            frame.key = self.keys.setdefault(value, value) if type(value) is str else value
            frame.raw_key = raw_key

    def _path(self) -> str:
        """The open mapping's key path, built like _StrictLoader._note_paths builds it."""
        path = ""
        for frame in self.stack[1:]:
            step = frame.step
            path = _join(path, step) if isinstance(step, str) else f"{path}[{step}]"
        return path


def _read_events(text: str) -> tuple[object, list[str]]:
    """Read the document with _EventReader; _Fallback when it must go to the node loader."""
    loader = _StrictLoader(text)
    try:
        return _EventReader(loader).read()
    except _Fallback:
        raise
    except Exception as exc:  # the node loader reports every error exactly as before
        raise _Fallback(type(exc).__name__) from None
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} not found. {_NOT_FOUND_HINT}") from None
    except IsADirectoryError:
        raise ConfigError(
            f"Config file {path} is a directory, not a file; pass --config with the path "
            "of the YAML file."
        ) from None
    except PermissionError:
        raise ConfigError(
            f"Config file {path} cannot be read: permission denied. Make it readable by "
            f"this user (chmod 600 {path})."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Config file {path} cannot be read: {exc.strerror or exc}. Check the path, "
            "or pass --config PATH."
        ) from None
    try:
        # utf-8-sig: editors on Windows may prepend a byte order mark.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"Config file {path} is not valid UTF-8 text (byte {exc.start}, line {line}); "
            "save it as UTF-8 and run `infima-autotask validate`."
        ) from None


def _load_yaml(text: str, path: Path) -> tuple[object, list[str]]:
    """The document and its duplicate-key problems; ConfigError when it is not readable YAML."""
    try:
        return _read_events(text)
    except _Fallback as exc:
        log.debug("config %s: read with the node loader (%s)", path, exc)
    return _load_yaml_nodes(text, path)


def _load_yaml_nodes(text: str, path: Path) -> tuple[object, list[str]]:
    loader = _StrictLoader(text)
    try:
        return loader.load_document(), loader.duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = exc.problem or exc.context or "invalid syntax"
        raise ConfigError(
            f"Config file {path} is not valid YAML{where}: {what}. Fix it and run "
            "`infima-autotask validate`."
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise ConfigError(
            f"Config file {path} is not valid YAML (line {line}): {exc.reason}. Fix it and "
            "run `infima-autotask validate`."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"Config file {path} is not valid YAML: {exc}. Fix it and run "
            "`infima-autotask validate`."
        ) from None
    except RecursionError:
        raise ConfigError(
            f"Config file {path} is nested too deeply to be a config file; "
            "compare it with config.example.yaml."
        ) from None
    except ValueError as exc:
        # e.g. an integer with thousands of digits (Python's int/str conversion limit), or
        # an impossible `!!timestamp`.
        reason = str(exc).split(";")[0][:120]
        raise ConfigError(
            f"Config file {path} holds a value that cannot be read ({reason}); "
            "fix it and run `infima-autotask validate`."
        ) from None
    finally:
        loader.dispose()


def load_config(path: Path) -> Config:
    """Read and validate the config file.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not YAML or invalid.
    """
    text = _read_text(path)
    data, duplicates = _load_yaml(text, path)
    problems: list[str] = []
    config = _validate(data, problems)
    if duplicates:
        problems = duplicates + problems
    if problems or config is None:
        raise _invalid(str(path), problems)
    log.debug("config loaded from %s (%d mappings)", path, len(config.mappings))
    return config


def load_config_or_default(path: Path) -> Config:
    """Like load_config, but a missing file gives Config() (a fresh machine).

    Raises:
        ConfigError: as load_config, except when the file does not exist.
    """
    if not path.exists() and not path.is_symlink():
        log.debug("no config file at %s; using defaults", path)
        return Config()
    return load_config(path)


# --- writing -------------------------------------------------------------------------


def _mapping_to_dict(m: Mapping) -> dict[str, Any]:
    return {key: getattr(m, key) for key in _MAPPING_KEYS}


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain dict in SPEC §6 key order, every key present (nulls included)."""
    return {
        "version": config.version,
        "state_dir": config.state_dir,
        "autotask": {key: getattr(config.autotask, key) for key in _AUTOTASK_KEYS},
        "infima": {key: getattr(config.infima, key) for key in _INFIMA_KEYS},
        "sync": {key: getattr(config.sync, key) for key in _SYNC_KEYS},
        "mappings": [_mapping_to_dict(m) for m in config.mappings],
    }


def dump_config(config: Config) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(
        config_to_dict(config), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def save_config(config: Config, path: Path) -> None:
    """Write the config atomically (temp file, fsync, rename), mode 0600.

    The config is validated first, so the tool never writes a file it could not load.

    Raises:
        ConfigError: the config is invalid, or the file cannot be written.
    """
    problems: list[str] = []
    if _validate(config_to_dict(config), problems) is None:
        raise ConfigError(
            f"Refusing to write an invalid config to {path} "
            f"({len(problems)} problem{'' if len(problems) == 1 else 's'}).",
            problems,
        )
    text = dump_config(config).encode("utf-8")
    try:
        write_atomically(path, text)
    except IsADirectoryError:
        raise ConfigError(
            f"Cannot write config file {path}: it is a directory. Pass --config with the "
            "path of a file."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Cannot write config file {path}: {exc.strerror or exc}. Check that its folder "
            "is writable, or pass --config PATH."
        ) from None
    log.debug("config saved to %s (%d mappings)", path, len(config.mappings))
