"""`deployer config validate|put|diff|schema` and `deployer app put|get|list`: app configurations
(YAML or JSON files, `deployer.cli.config_files`), checked by the same model (`AppConfig`) the
functions use. Nothing is written unless the whole file is valid.

`config diff` exits 0 when the file and the stored config are the same, 1 when a field differs
(or the app is not stored yet), 4 when the file is invalid, as `diff` does.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from deployer.cli.config_files import differences, read_config, schema
from deployer.cli.context import EXIT_FAILED, EXIT_OK, Context, UsageError
from deployer.errors import AppNotFound

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


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
    # `config put FILE`, or `config put APP FILE` to check that the file configures APP.
    app, path = (None, ctx.args.first) if ctx.args.second is None else (ctx.args.first, ctx.args.second)
    config = read_config(path)
    if app is not None and config.app != app:
        raise UsageError(f"{path} configures app {config.app!r}, not {app!r}")
    ctx.deps.apps.put(config)
    if ctx.json:
        ctx.emit_json({"stored": True, "app": config.app, "config": config.to_document()})
    else:
        ctx.console().print(f"app {config.app} stored (repository {config.repository})")
    return EXIT_OK


def _app_put(ctx: Context) -> int:
    path = ctx.args.file or ctx.args.file_option
    if not path or (ctx.args.file and ctx.args.file_option):
        raise UsageError("app put: give the config file once, as FILE or --file FILE")
    config = read_config(path)
    ctx.deps.apps.put(config)
    if ctx.json:
        ctx.emit_json({"stored": True, "app": config.app, "config": config.to_document()})
    else:
        ctx.out.write(f"app {config.app} stored (repository {config.repository})\n")
    return EXIT_OK


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _diff(ctx: Context) -> int:
    config = read_config(ctx.args.file)
    try:
        stored: dict[str, Any] | None = ctx.deps.apps.get(config.app).to_document()
    except AppNotFound:
        stored = None
    changes = differences(stored, config.to_document())
    if ctx.json:
        ctx.emit_json(
            {
                "app": config.app,
                "stored": stored is not None,
                "differs": bool(changes),
                "changes": [{"field": f, "stored": old, "file": new} for f, old, new in changes],
            }
        )
    elif stored is None:
        ctx.out.write(f"{config.app} is not stored yet: `deployer config put` would store every field\n")
    elif not changes:
        ctx.out.write(f"{config.app}: no change (the stored config is the same)\n")
    else:
        count = f"{len(changes)} field{'s' if len(changes) != 1 else ''}"
        ctx.out.write(f"{config.app}: {count} would change (stored -> file)\n")
    if not ctx.json:
        for field, old, new in changes:
            ctx.out.write(f"  {field}: {_show(old)} -> {_show(new)}\n")
    return EXIT_FAILED if changes else EXIT_OK


def _schema(ctx: Context) -> int:
    ctx.emit_json(schema())
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
    config = sub.add_parser(
        "config", help="check, compare or store an app config file (YAML or JSON)", parents=[common]
    )
    verbs = config.add_subparsers(dest="verb", required=True)
    validate = verbs.add_parser("validate", help="check a config file; nothing is written", parents=[common])
    validate.add_argument("file")
    validate.set_defaults(run=_validate)
    put = verbs.add_parser(
        "put", help="validate, then store an app's config: put [APP] FILE", parents=[common]
    )
    put.add_argument("first", metavar="[APP] FILE")
    put.add_argument("second", nargs="?", help=argparse.SUPPRESS)
    put.set_defaults(run=_config_put)
    diff = verbs.add_parser(
        "diff",
        help="what storing the file would change, field by field (exit 0 same, 1 different)",
        parents=[common],
    )
    diff.add_argument("file")
    diff.set_defaults(run=_diff)
    verbs.add_parser(
        "schema", help="print the JSON Schema of a config file (for editors)", parents=[common]
    ).set_defaults(run=_schema)

    app = sub.add_parser("app", help="register and inspect apps", parents=[common])
    app_verbs = app.add_subparsers(dest="verb", required=True)
    app_put = app_verbs.add_parser(
        "put", help="validate and store an app config (YAML or JSON file)", parents=[common]
    )
    app_put.add_argument("file", nargs="?")
    app_put.add_argument("--file", dest="file_option", metavar="FILE")
    app_put.set_defaults(run=_app_put)
    get = app_verbs.add_parser("get", help="print an app's config", parents=[common])
    get.add_argument("name")
    get.set_defaults(run=_app_get)
    app_verbs.add_parser("list", help="list apps", parents=[common]).set_defaults(run=_app_list)
