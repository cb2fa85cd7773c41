"""`deployer` command line: register and inspect apps and releases.

    deployer app put --file web.json     validate, then store (nothing is written on error)
    deployer app get NAME
    deployer app list
    deployer releases NAME [--limit N]
    deployer rollback|promote|pause|resume|status NAME ...   (see deployer.operations_cli)

Reads the stack's settings from the same environment variables as the functions (APPS_TABLE,
RELEASES_TABLE, ...; see `deployer.settings`). Commands live in `COMMANDS`, a dict of
name -> (register, run), so more commands plug in without touching the parser code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from deployer.errors import DeployerError
from deployer.operations_cli import OPERATION_COMMANDS

if TYPE_CHECKING:
    from deployer.rollout import Deps

Runner = Callable[[argparse.Namespace, "Deps", TextIO], int]


def _deps() -> Deps:
    from deployer.rollout import Deps  # noqa: PLC0415
    from deployer.settings import Settings  # noqa: PLC0415

    return Deps.from_settings(Settings.from_env())


def _print(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _app_put(args: argparse.Namespace, deps: Deps, out: TextIO) -> int:
    from deployer.errors import InvalidAppConfig  # noqa: PLC0415
    from deployer.models.config import AppConfig  # noqa: PLC0415

    try:
        document = json.loads(Path(args.file).read_text())
    except OSError as exc:
        raise InvalidAppConfig(f"cannot read {args.file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidAppConfig(f"{args.file} is not valid JSON: {exc}") from exc
    config = AppConfig.parse(document)
    deps.apps.put(config)
    out.write(f"app {config.app} stored (repository {config.repository})\n")
    return 0


def _app_get(args: argparse.Namespace, deps: Deps, out: TextIO) -> int:
    _print(deps.apps.get(args.name).to_document(), out)
    return 0


def _app_list(args: argparse.Namespace, deps: Deps, out: TextIO) -> int:
    for config in deps.apps.list():
        out.write(f"{config.app}\t{config.repository}\t{config.auto_scaling_group}\n")
    return 0


def _releases(args: argparse.Namespace, deps: Deps, out: TextIO) -> int:
    for r in deps.releases.list_recent(args.name, limit=args.limit):
        out.write(
            f"{r.release}\t{r.status.value}\t{r.source.value}\t{r.tag or '-'}\t{r.digest}\t"
            f"{r.created_at.isoformat()}\t{r.status_reason or r.reason}\n"
        )
    return 0


def _register_app(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    app = sub.add_parser("app", help="register and inspect apps")
    verbs = app.add_subparsers(dest="verb", required=True)
    put = verbs.add_parser("put", help="validate and store an app config (JSON file)")
    put.add_argument("--file", required=True)
    put.set_defaults(run=_app_put)
    get = verbs.add_parser("get", help="print an app's config")
    get.add_argument("name")
    get.set_defaults(run=_app_get)
    verbs.add_parser("list", help="list apps").set_defaults(run=_app_list)


def _register_releases(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    releases = sub.add_parser("releases", help="an app's releases, newest first")
    releases.add_argument("name")
    releases.add_argument("--limit", type=int, default=20)
    releases.set_defaults(run=_releases)


# name -> function adding the command's parser (which sets `run` as its default).
COMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "app": _register_app,
    "releases": _register_releases,
    **OPERATION_COMMANDS,  # rollback, promote, pause, resume, status
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deployer", description="push-to-deploy for Docker fleets on EC2")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS.values():
        register(sub)
    return parser


def main(
    argv: list[str] | None = None,
    deps: Deps | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    args = build_parser().parse_args(argv)
    try:
        run: Runner = args.run
        return run(args, deps or _deps(), out)
    except DeployerError as exc:
        err.write(f"error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
