"""`deployer config validate|put` and `deployer app put|get|list`: app configurations, checked by
the same model (`AppConfig`) the functions use. Nothing is written unless the whole file is valid."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.cli.context import EXIT_OK, Context, UsageError
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def read_config(path: str) -> AppConfig:
    """Parse and validate an app config file; InvalidAppConfig names the file and each bad field."""
    try:
        document: Any = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidAppConfig(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidAppConfig(f"{path} is not valid JSON: {exc}") from exc
    try:
        return AppConfig.parse(document)
    except InvalidAppConfig as exc:
        raise InvalidAppConfig(f"{path}: {exc}") from exc


def _validate(ctx: Context) -> int:
    config = read_config(ctx.args.file)
    if ctx.json:
        ctx.emit_json({"valid": True, "app": config.app, "config": config.to_document()})
    else:
        ctx.console().print(
            f"[green]valid[/]: app {config.app} (repository {config.repository}, "
            f"group {config.auto_scaling_group})"
        )
    return EXIT_OK


def _config_put(ctx: Context) -> int:
    config = read_config(ctx.args.file)
    if config.app != ctx.args.app:
        raise UsageError(f"{ctx.args.file} configures app {config.app!r}, not {ctx.args.app!r}")
    ctx.deps.apps.put(config)
    if ctx.json:
        ctx.emit_json({"stored": True, "app": config.app, "config": config.to_document()})
    else:
        ctx.console().print(f"app {config.app} stored (repository {config.repository})")
    return EXIT_OK


def _app_put(ctx: Context) -> int:
    config = read_config(ctx.args.file)
    ctx.deps.apps.put(config)
    if ctx.json:
        ctx.emit_json({"stored": True, "app": config.app, "config": config.to_document()})
    else:
        ctx.out.write(f"app {config.app} stored (repository {config.repository})\n")
    return EXIT_OK


def _app_get(ctx: Context) -> int:
    ctx.emit_json(ctx.deps.apps.get(ctx.args.name).to_document())
    return EXIT_OK


def _app_list(ctx: Context) -> int:
    configs = ctx.deps.apps.list()
    if ctx.json:
        ctx.emit_json([c.to_document() for c in configs])
        return EXIT_OK
    for config in configs:
        ctx.out.write(f"{config.app}\t{config.repository}\t{config.auto_scaling_group}\n")
    return EXIT_OK


def register(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    config = sub.add_parser("config", help="validate or store an app config file", parents=[common])
    verbs = config.add_subparsers(dest="verb", required=True)
    validate = verbs.add_parser("validate", help="check a config file; nothing is written", parents=[common])
    validate.add_argument("file")
    validate.set_defaults(run=_validate)
    put = verbs.add_parser("put", help="validate, then store an app's config", parents=[common])
    put.add_argument("app")
    put.add_argument("file")
    put.set_defaults(run=_config_put)

    app = sub.add_parser("app", help="register and inspect apps", parents=[common])
    app_verbs = app.add_subparsers(dest="verb", required=True)
    app_put = app_verbs.add_parser(
        "put", help="validate and store an app config (JSON file)", parents=[common]
    )
    app_put.add_argument("--file", required=True)
    app_put.set_defaults(run=_app_put)
    get = app_verbs.add_parser("get", help="print an app's config", parents=[common])
    get.add_argument("name")
    get.set_defaults(run=_app_get)
    app_verbs.add_parser("list", help="list apps", parents=[common]).set_defaults(run=_app_list)
