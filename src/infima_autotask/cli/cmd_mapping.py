"""Commands of the mapping issue (not built yet)."""

from __future__ import annotations

from typing import Any

COMMANDS: list[Any] = []
