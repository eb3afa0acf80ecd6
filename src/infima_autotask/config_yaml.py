"""The config file as YAML text (SPEC §6): read like ``yaml.safe_load``, written by PyYAML.

Reading differs from ``yaml.safe_load`` in one way: a duplicate key, which PyYAML silently
resolves to the last value, is reported with its key path and line numbers. The validation of
what was read lives in ``config.py``.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .fsutil import write_atomically

_NOT_FOUND_HINT = "Run `infima-autotask connect` to create it, or pass --config PATH."
_MERGE_TAG = "tag:yaml.org,2002:merge"

# The parser that composes the node tree: libyaml's (several times faster on a 5,000-mapping
# file) when PyYAML was built with it, else PyYAML's own. Construction is Python either way.
_COMPOSER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


# --- naming places and values in the document (here and in config.py's validation) -----


def describe(value: object) -> str:
    """A short, safe rendering of a value read from the file, for a problem line."""
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


def key_path(prefix: str, key: object) -> str:
    """The path of `key` inside the mapping at `prefix`, e.g. ``sync.timezone``."""
    # A key with a line break or other unprintable text is quoted: it must not split the
    # indented problem line it appears in.
    if isinstance(key, str) and key and key.isprintable():
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{describe(key)}]"


# --- reading -------------------------------------------------------------------------


def _mapping_paths(root: yaml.Node) -> dict[int, str]:
    """The key path of each mapping and sequence node, by id, for duplicate-key problems."""
    paths: dict[int, str] = {}
    # Iterative, and each node once: aliases may share nodes (billion laughs).
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in paths:
            continue
        paths[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(value_node, yaml.ScalarNode):
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    stack.append((value_node, key_path(path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                if not isinstance(item, yaml.ScalarNode):
                    stack.append((item, f"{path}[{index}]"))
    return paths


class _StrictConstructor(yaml.constructor.SafeConstructor):
    """SafeLoader's constructor, noting duplicate keys (PyYAML keeps the last one silently)."""

    def __init__(self, root: yaml.Node) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        self._paths = _mapping_paths(root)

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
                    f"{key_path(path, key)}: duplicate key ({where}); keep only one"
                )
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _compose(text: str) -> yaml.Node | None:
    composer = _COMPOSER(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


def load(text: str, path: Path) -> tuple[object, list[str]]:
    """The document in `text` and its duplicate-key problems.

    Raises:
        ConfigError: the text is not readable YAML (naming `path` and, when known, the line).
    """
    try:
        root = _compose(text)
        if root is None:
            return None, []
        constructor = _StrictConstructor(root)
        return constructor.construct_document(root), constructor.duplicates
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


def read(path: Path) -> tuple[object, list[str]]:
    """The document in the file at `path` and its duplicate-key problems.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 or not YAML.
    """
    return load(_read_text(path), path)


# --- writing -------------------------------------------------------------------------


def dump(data: dict[str, Any]) -> str:
    """`data` as block-style YAML, keys in the order given."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (temp file, fsync, rename), mode 0600.

    Raises:
        ConfigError: the file cannot be written.
    """
    try:
        write_atomically(path, text.encode("utf-8"))
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
