"""`deployer` command line: operate apps, follow deploys, read logs, diagnose hosts.

    deployer [--profile P] [--region R] [--endpoint-url URL] [--stack NAME] [--json] COMMAND ...

    status APP                      release, pointer vs launch-template version, hosts, drift
    history APP [--limit N]         releases with status, source, duration, hosts, reason
    deploy APP (--tag T | --digest D | --release N) [--wait]
    rollback APP [--to R] [--reason TEXT] [--wait]
    cancel APP [--reason TEXT] [--wait]
    wait APP [--release N | --digest D [--tag T]] [--timeout S]
                                    follow a deploy live until its verdict (--digest: CI's own push)
    logs APP [--host I] [--since 10m] [--follow]
    diagnose APP --host I           read-only checks on one host; names the failing layer
    doctor                          read-only checks of stack, quota, apps, hosts' role, documents, rules
    config validate FILE | config put [APP] FILE | config diff FILE | config schema   (YAML or JSON)
    app put FILE | app get APP | app list;  releases APP;  promote APP --to R;  pause|resume APP

The stack's names come from its outputs (`--stack`, DEPLOYER_STACK, default `deployer`: one
DescribeStacks, cached; `deployer.cli.stack`); a variable set in the environment (APPS_TABLE,
RELEASES_TABLE, ..., see `deployer.settings`) wins over its output.
Actions that change a deploy go to the stack's rollback function when DEPLOYER_ROLLBACK_FUNCTION
(or --function) names it, else the same core code runs here with the caller's credentials.
Errors are one line on stderr; exit codes are in `deployer.cli.context`.

This package imports rich; nothing the functions import may import it (the layer has no rich).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from deployer.cli.apps import register as register_apps
from deployer.cli.context import EXIT_FAILED, EXIT_USAGE, Context, UsageError
from deployer.cli.deploys import register as register_deploys
from deployer.cli.diagnose import register as register_diagnose
from deployer.cli.doctor import register as register_doctor
from deployer.cli.errors import describe
from deployer.cli.logs import register as register_logs
from deployer.cli.views import register as register_views

if TYPE_CHECKING:
    from deployer.wiring import Adapters

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]", argparse.ArgumentParser], None]

COMMANDS: tuple[Register, ...] = (
    register_views,
    register_deploys,
    register_logs,
    register_diagnose,
    register_doctor,
    register_apps,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 4) instead of usage + exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def global_options(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command (`deployer --json status web`, or
    `deployer status web --json`); after the command they must not reset a value given before."""
    parent = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS
    parent.add_argument("--profile", default=default, help="AWS profile (default: the usual chain)")
    parent.add_argument("--region", default=default, help="AWS region (default: AWS_REGION)")
    parent.add_argument("--endpoint-url", default=default, help="AWS endpoint (e.g. a local cloud)")
    parent.add_argument(
        "--stack", default=default, help="the deployer stack whose outputs name tables and documents "
        "(default: $DEPLOYER_STACK, else deployer)"
    )
    parent.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="machine-readable output",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="deployer",
        description="push-to-deploy for Docker fleets on EC2",
        parents=[global_options(defaults=True)],
    )
    sub: Any = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = global_options(defaults=False)
    for register in COMMANDS:
        register(sub, common)
    return parser


def main(
    argv: list[str] | None = None,
    deps: Adapters | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    sleep: Callable[[float], None] = time.sleep,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run one command; every failure is one line on `err` and an exit code, no traceback."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    ctx = Context(args=args, out=out, err=err, deps_given=deps, sleep=sleep, clock=clock)
    try:
        code: int = args.run(ctx)
    except KeyboardInterrupt:
        err.write("error: interrupted\n")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, never a traceback
        message, code = describe(exc)
        err.write(f"error: {message}\n")
        return code
    return code


__all__ = ["COMMANDS", "build_parser", "main"]
