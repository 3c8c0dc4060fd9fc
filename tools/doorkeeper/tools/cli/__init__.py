"""The one `doorkeeper` command.

Each concern keeps its commands in its own module (`cli/*.py`, `bench/`, `demo/`);
this module only assembles them. Imports are lazy so that `doorkeeper --help`
does not load onnxruntime or grpc.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

# (group or command name, module, attribute): loaded on first use.
_COMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("doorkeeper.tools.cli.hub", "hub"),
    "agent": ("doorkeeper.tools.cli.agent", "agent"),
    "site": ("doorkeeper.tools.cli.admin", "site"),
    "device": ("doorkeeper.tools.cli.admin", "device"),
    "person": ("doorkeeper.tools.cli.people", "person"),
    "fleet": ("doorkeeper.tools.cli.admin", "fleet"),
    "operator": ("doorkeeper.tools.cli.operators", "operator"),
    "audit": ("doorkeeper.tools.cli.operators", "audit"),
    "face": ("doorkeeper.tools.cli.face", "face"),
    "logs": ("doorkeeper.tools.cli.logs", "logs"),
    "bench": ("doorkeeper.tools.bench.command", "bench"),
    "demo": ("doorkeeper.tools.demo.command", "demo"),
    "config": ("doorkeeper.tools.cli.config", "config"),
    "console": ("doorkeeper.tools.console.command", "console"),
    "rollout": ("doorkeeper.tools.cli.rollout", "rollout"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules, imported on use."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module, attr = self._lazy[cmd_name]
            try:
                command = getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
                return None  # that part of the product is not built yet
            return command  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)


class RootGroup(LazyGroup):
    """The `doorkeeper` command: bad input is one line naming the flag, exit code 2.

    click's own usage errors print a usage block and a hint over three lines; an operator
    (or a script reading stderr) gets one line instead, as from every `fail`."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        # gRPC's C core would print its own handshake and connect lines around our one line
        # (the long-running daemons keep its error lines).
        argv = list(args) if args is not None else sys.argv[1:]
        if argv[:2] not in (["hub", "serve"], ["agent", "run"]):
            os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        from doorkeeper.tools.cli.common import fail

        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            fail(_usage_line(exc), code=2)
        except click.ClickException as exc:
            fail(exc.format_message(), code=exc.exit_code)
        except click.Abort:
            fail("aborted", code=1)
        sys.exit(result if isinstance(result, int) else 0)


def _usage_line(exc: click.UsageError) -> str:
    command = exc.ctx.command_path if exc.ctx is not None else "doorkeeper"
    message = " ".join(exc.format_message().split())
    return f"{command}: {message} (see {command} --help)"


@click.group(cls=RootGroup, lazy=_COMMANDS)
@click.version_option(package_name="doorkeeper")
def cli() -> None:
    """doorkeeper: signed whitelist sync and offline face-verifying doors."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
