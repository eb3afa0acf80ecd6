"""The ``infima-autotask`` command line: thin click commands over the library."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from infima_autotask import __version__
from infima_autotask.cli import (
    cmd_demo,
    cmd_doctor,
    cmd_history,
    cmd_mapping,
    cmd_notify,
    cmd_report,
    cmd_revert,
    cmd_setup,
    cmd_sync,
)
from infima_autotask.cli._common import show_error, split_example, write_block
from infima_autotask.errors import InfimaAutotaskError
from infima_autotask.http import RedactSecrets
from infima_autotask.runtime import ENV_CONFIG, Runtime, Seams

APP_NAME = "infima-autotask"


def default_config_path() -> Path:
    return Path(click.get_app_dir(APP_NAME)) / "config.yaml"


class _Cli(click.Group):
    """Root group: the one place where library errors become ``Error:`` lines and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InfimaAutotaskError as exc:
            show_error(exc)
            raise click.exceptions.Exit(exc.exit_code) from None

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_block(formatter, split_example(self.help)[0])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)  # the pointer to COMMAND --help, then the example
        write_block(formatter, split_example(self.help)[1])

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # keep the order of the operator's month, not alphabetical

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Accept the global options after the command too (`sync -v`, `sync --config F`)."""
        return super().parse_args(ctx, _globals_first(args, self.commands))


_VERBOSE = re.compile(r"-v+")


def _takes_value(command: click.Command) -> set[str]:
    """The command's option names that are followed by a value."""
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }


def _globals_first(args: list[str], commands: Mapping[str, click.Command]) -> list[str]:
    """``args`` with ``-v``/``--verbose``/``--config X`` found after the command moved before it.

    The command is the first word that is not the value of ``--config``; after it, a word that
    is the value of one of the command's own options (a file named ``-v``) is left alone. No
    command has options of these names, so moving them changes nothing else.
    """
    position = None
    for index, arg in enumerate(args):
        if arg in commands and (index == 0 or args[index - 1] != "--config"):
            position = index
            break
    if position is None:
        return args
    front, command, rest = args[:position], args[position], args[position + 1 :]
    valued = _takes_value(commands[command])
    moved: list[str] = []
    kept: list[str] = []
    index = 0
    while index < len(rest):
        arg = rest[index]
        if arg == "--":
            kept += rest[index:]
            break
        if arg in valued and index + 1 < len(rest):
            kept += rest[index : index + 2]  # the option and its value, whatever it looks like
            index += 2
            continue
        if _VERBOSE.fullmatch(arg) or arg == "--verbose" or arg.startswith("--config="):
            moved.append(arg)
        elif arg == "--config" and index + 1 < len(rest):
            moved += rest[index : index + 2]
            index += 1
        else:
            kept.append(arg)
        index += 1
    return [*front, *moved, command, *kept]


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger("infima_autotask")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@click.group(
    cls=_Cli,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run `infima-autotask COMMAND --help` for a command's options and an example.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=True, path_type=Path),
    envvar=ENV_CONFIG,
    show_envvar=True,
    default=default_config_path,
    show_default="the app folder's config.yaml",
    help="Config file.",
)
@click.option("-v", "--verbose", count=True, help="Log to stderr; repeat (-vv) for HTTP detail.")
@click.version_option(__version__, prog_name=APP_NAME)
@click.pass_context
def cli(ctx: click.Context, config_path: Path, verbose: int) -> None:
    """Write each client's active INFIMA user count onto its Autotask Contract Service.

    \b
    Example:
      infima-autotask demo                  # try it against the built-in sandbox
      infima-autotask connect               # then: connect --infima, map, sync --dry-run
    """
    _setup_logging(verbose)
    # A caller (a test) may hand in its own clock, sleep and HTTP client as click's ``obj``.
    seams = ctx.obj if isinstance(ctx.obj, Seams) else None
    runtime = Runtime(config_path.expanduser(), seams=seams)
    ctx.obj = runtime
    ctx.call_on_close(runtime.close)


for _module in (
    cmd_setup,
    cmd_doctor,
    cmd_mapping,
    cmd_sync,
    cmd_history,
    cmd_report,
    cmd_revert,
    cmd_notify,
    cmd_demo,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name=APP_NAME)
