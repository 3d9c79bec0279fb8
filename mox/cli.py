"""The `mox` command.

Subcommands live in their own modules and are loaded lazily (click imports are cheap, TLC
and aiohttp are not). A subcommand is listed here only by the module that implements it; a
module that does not exist yet contributes no command, so no command exists that cannot run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from mox.errors import MoxError

# (group path, command name) -> "module:attribute" of a click.Command.
COMMANDS: dict[tuple[str, str], str] = {
    ("", "tlc"): "checker.tlc_cli:command",
    ("", "simulate"): "mox.sim.cli:command",
    ("", "check"): "checker.cli:check_command",
    ("", "report"): "checker.report_cli:command",
    ("", "start"): "mox.node.cli:start_command",
    ("", "dev"): "mox.node.cli:dev_command",
    ("", "members"): "mox.node.members_cli:command",
    ("bench", "storage"): "mox.bench.storage:command",
    ("bench", "sim"): "mox.bench.sim:command",
    ("bench", "cluster"): "mox.bench.cluster:command",
    ("bench", "check"): "mox.bench.check:command",
}


def _available(target: str) -> bool:
    module = target.split(":", 1)[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _load(target: str) -> click.Command:
    module_name, attr = target.split(":", 1)
    command = getattr(importlib.import_module(module_name), attr)
    assert isinstance(command, click.Command), target
    return command


class LazyGroup(click.Group):
    """A group whose subcommands come from COMMANDS, imported on first use."""

    def __init__(self, *args: Any, path: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = path

    def _entries(self) -> dict[str, str]:
        return {
            name: target
            for (group, name), target in COMMANDS.items()
            if group == self.path and _available(target)
        }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entries()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = self._entries().get(cmd_name)
        return _load(target) if target else None


@click.group(cls=LazyGroup, path="")
@click.version_option(package_name="mox")
def cli() -> None:
    """Mox: a TLA+-backed replicated, event-sourced database."""


@cli.group(cls=LazyGroup, path="bench")
def bench() -> None:
    """Benchmarks that print numbers beside a baseline measured in the same run."""


def main() -> None:
    """Entry point: user errors become one line on stderr and an exit code, never a traceback."""
    try:
        # Without standalone mode click returns the code of ctx.exit(n) instead of exiting.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MoxError as exc:
        click.echo(f"mox: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
