"""The `gdr` command: one subcommand per stage.

Command functions live in `gdr_cli/commands/<stage>.py`; each only parses options, resolves
the config and calls the keyword-only `run` of `stages/<stage>.py`. Stage modules are
imported inside the command bodies so that `gdr --help` never loads torch.
"""

from __future__ import annotations

import sys

import typer

from gdr_cli import __version__
from gdr_cli.commands import register
from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.manifest import set_command

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
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Generative recommendation with discrete diffusion."""


register(app)


def _usage_line(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    cmd = ctx.command_path if ctx is not None else "gdr"
    return f"error: {exc.format_message()} ({cmd}) — see `{cmd} --help`"  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gdr` console script; turns every user error into one line and an exit code.

    Typer ships its own copy of click, so its exceptions are matched by name rather than by class.
    """
    set_command(["gdr", *(sys.argv[1:] if argv is None else argv)])
    interrupted = "interrupted: nothing half-written was kept; earlier artifacts are intact"
    try:
        rv = app(args=argv, prog_name="gdr", standalone_mode=False)
    except GdrError as exc:
        console.print(exc.line(), markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print(interrupted, markup=False)
        return 130
    except Exception as exc:
        kind = type(exc).__name__
        if kind == "NoArgsIsHelpError":  # `gdr` or `gdr stage` alone: usage, as with --help
            ctx = getattr(exc, "ctx", None)
            console.print(ctx.get_help() if ctx is not None else str(exc), markup=False)
            return 0
        if kind == "Abort":
            console.print(interrupted, markup=False)
            return 130
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage errors
            console.print(
                _usage_line(exc)
                if "Usage" in kind or "Parameter" in kind or "Option" in kind
                else f"error: {exc.format_message()}",
                markup=False,
            )
            return int(exc.exit_code) or 2
        raise
    if rv == 130:  # typer turns Ctrl-C inside a command into Exit(130)
        console.print(interrupted, markup=False)
    return rv if isinstance(rv, int) else 0


def run() -> None:
    sys.exit(main())
