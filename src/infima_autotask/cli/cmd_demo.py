"""Commands of the demo issue (not built yet)."""

from __future__ import annotations

from typing import Any

COMMANDS: list[Any] = []
