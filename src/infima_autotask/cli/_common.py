"""Shared pieces of the click commands: the error boundary, options, rendering, terminal checks."""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

import click
from tabulate import tabulate

from infima_autotask.config import AUTOTASK, HALO, PSA_NAMES, PSAS, Config
from infima_autotask.credentials import ENV_USERNAME
from infima_autotask.errors import InfimaAutotaskError, UsageError
from infima_autotask.runtime import Runtime
from infima_autotask.sync import parse_month
from infima_autotask.whole_number import (
    MAX_INT,
    NotWholeNumberError,
    OutOfRangeError,
    parse_whole,
)

F = TypeVar("F", bound=Callable[..., Any])


_EXAMPLE = "\b\nExample:"


def split_example(help_text: str | None) -> tuple[str, str]:
    """A command's help text cut into its description and its ``Example:`` block."""
    text = inspect.cleandoc(help_text or "").partition("\f")[0]
    head, mark, example = text.partition(_EXAMPLE)
    return head.rstrip(), mark + example if mark else ""


def write_block(formatter: click.HelpFormatter, text: str) -> None:
    if text:
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(text)


class Command(click.Command):
    """A command whose help ends with its ``Example:`` block, after the options (SPEC §2)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_block(formatter, split_example(self.help)[0])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        write_block(formatter, split_example(self.help)[1])


class Group(click.Group):
    """A command group whose help ends with its ``Example:`` block, as a command's does."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_block(formatter, split_example(self.help)[0])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)  # after the list of its commands
        write_block(formatter, split_example(self.help)[1])


def can_prompt() -> bool:
    """Whether the user can answer a prompt: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def show_progress() -> bool:
    """Whether a progress bar may be drawn: stderr is a terminal."""
    return sys.stderr.isatty()


def show_error(error: InfimaAutotaskError) -> None:
    """``Error: <message>`` on stderr, then any detail lines indented by two spaces."""
    lines = [f"Error: {error.message}", *(f"  {line}" for line in error.details)]
    click.echo("\n".join(lines), err=True)


def get_runtime() -> Runtime:
    runtime = click.get_current_context().find_object(Runtime)
    if runtime is None:  # only when a command is invoked outside the root group
        raise click.UsageError("internal: no runtime")
    return runtime


if TYPE_CHECKING:  # click >= 8.2 types ParamType generically; 8.1 cannot subscript it
    _ParamType = click.ParamType[int, Any]
else:
    _ParamType = click.ParamType


class _Whole(_ParamType):
    """A whole number in a range, without click's range note in every help line."""

    def __init__(self, name: str, low: int) -> None:
        self.name = name
        self.low = low

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        # A minus sign is read so that -1 is told it is out of range, not that it is no number.
        try:
            return parse_whole(str(value), low=self.low, signs="-", spaces=True)
        except NotWholeNumberError:
            self.fail(f"{value!r} is not a whole number.", param, ctx)
        except OutOfRangeError:
            text = str(value).strip()
            if not text.startswith("-") and text.lstrip("0"):  # above the range, not below
                self.fail(f"{value!r} is too large (at most {MAX_INT}).", param, ctx)
            kind = "a positive whole number" if self.low else "a whole number of 0 or more"
            self.fail(f"{value!r} is not {kind}.", param, ctx)


ID = _Whole("ID", 1)
# Company 0 is every tenant's own organization (AUTOTASK_API.md): the one id that may be 0.
ACCOUNT_ID = _Whole("ID", 0)
COUNT = _Whole("N", 0)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON document on stdout instead of a table."
)


def snake(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_")


def emit_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool) -> None:
    """Print rows keyed by column header: a table, or a JSON list with snake_case keys."""
    if as_json:
        emit_json([{snake(column): row.get(column) for column in columns} for row in rows])
        return
    if not rows:
        return
    table = [[_cell(row.get(column)) for column in columns] for row in rows]
    click.echo(tabulate(table, headers=list(columns), disable_numparse=True))


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def warn(message: str) -> None:
    click.echo(message, err=True)


def _cell(value: Any) -> Any:
    return "-" if value is None else value


def month_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    """``--month YYYY-MM`` as the period's first day; a bad value is click's usage error."""
    if value is None:
        return None
    try:
        return parse_month(value)
    except UsageError as exc:
        raise click.BadParameter(exc.message) from None


def signed(value: int | None) -> str:
    """``+2``, ``-3``, ``0``; ``-`` when unknown."""
    return "-" if value is None else f"{value:+d}" if value else "0"


psa_option = click.option(
    "--psa",
    type=click.Choice(PSAS),
    default=None,
    help="The PSA to talk to (default: the only connected PSA, else autotask).",
)


def chosen_psa(
    given: str | None, runtime: Runtime, config: Config | None = None, *, halo: bool = False
) -> str:
    """``--psa`` as given, else the default (SPEC §10: the only connected PSA, else
    Autotask); HaloPSA only for the commands that serve it yet (``halo``)."""
    psa = given or runtime.default_psa(config)
    if given is None and psa == AUTOTASK:
        from_env = bool(runtime.env.get(ENV_USERNAME))
        connected = (config or runtime.config).connected_psas(autotask_from_env=from_env)
        if len(connected) > 1 and AUTOTASK not in connected:
            # "else autotask" would only say Autotask is not set up: name the choice instead.
            names = " or ".join(f"--psa {key}" for key in connected)
            raise UsageError(
                f"{' and '.join(PSA_NAMES[key] for key in connected)} are both connected: "
                f"say which this command is for with {names}."
            )
    if psa == HALO and not halo:
        raise UsageError(
            "HaloPSA is not supported by this version yet; use --psa autotask or connectwise."
        )
    return psa
