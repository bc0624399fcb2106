"""The `gdr` command: one subcommand per stage.

Command functions live in `gdr_cli/commands/<stage>.py`; each only parses options, resolves
the config and calls the keyword-only `run` of `stages/<stage>.py`. Stage modules are
imported inside the command bodies so that `gdr --help` never loads torch.
"""

from __future__ import annotations

import sys

import click
import typer

from gdr_cli import __version__
from gdr_cli.commands import register
from gdr_cli.console import console
from gdr_cli.errors import GdrError

app = typer.Typer(
    name="gdr",
    help="Generative recommendation with discrete diffusion: a staged, reproducible pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"gdr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Generative recommendation with discrete diffusion."""


register(app)

try:  # typer >= 0.2x parses with its own vendored click, whose exceptions are not click's
    from typer import exceptions as _typer_exc
    from typer._click import exceptions as _vendored
except ImportError:  # older typer: plain click
    _typer_exc = _vendored = click.exceptions
_NO_ARGS = (click.exceptions.NoArgsIsHelpError, _vendored.NoArgsIsHelpError)
_USAGE = (click.UsageError, _vendored.UsageError)
_EXIT = (click.exceptions.Exit, _typer_exc.Exit)
_ABORT = (click.Abort, _typer_exc.Abort, KeyboardInterrupt)
_CLICK = (click.ClickException, _vendored.ClickException)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gdr` console script; turns every user error into one line and an exit code."""
    try:
        app(args=argv, prog_name="gdr", standalone_mode=False)
    except GdrError as exc:
        console.print(exc.line(), markup=False, soft_wrap=True)
        return exc.exit_code
    except _NO_ARGS as exc:  # `gdr` or `gdr stage` alone: usage, as with --help
        console.print(exc.ctx.get_help() if exc.ctx else str(exc), markup=False)
        return 0
    except _USAGE as exc:
        cmd = exc.ctx.command_path if exc.ctx else "gdr"
        console.print(f"error: {exc.format_message()} ({cmd}) — see `{cmd} --help`", markup=False, soft_wrap=True)
        return 2
    except _EXIT as exc:
        return exc.exit_code
    except _ABORT:
        console.print("interrupted: nothing half-written was kept; earlier artifacts are intact", markup=False)
        return 130
    except _CLICK as exc:
        console.print(f"error: {exc.format_message()}", markup=False, soft_wrap=True)
        return exc.exit_code
    return 0


def run() -> None:
    sys.exit(main())
