"""`deployer config validate|put|diff|schema|set|unset` and `deployer app put|get|list`: app
configurations (YAML or JSON files, `deployer.cli.config_files`), checked by the same model
(`AppConfig`) the functions use. Nothing is written unless the whole file is valid.

A change of `environment` or `secrets` (`config put`, `config set`, `config unset`) is released
at once as a config-only release (the running image, the new config), unless --no-deploy;
`app put` stores only.

`config diff` exits 0 when the file and the stored config are the same, 1 when a field differs
(or the app is not stored yet), 4 when the file is invalid, as `diff` does.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from deployer.cli.config_files import differences, read_config, schema
from deployer.cli.context import EXIT_FAILED, EXIT_OK, FUNCTION_ENV, Context, UsageError
from deployer.cli.deploys import DEFAULT_TIMEOUT, deploy_config, follow
from deployer.errors import AppNotFound, DeployerError, InvalidAppConfig
from deployer.models.config import AppConfig

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


def _stored(ctx: Context, app: str) -> AppConfig | None:
    try:
        return ctx.deps.apps.get(app)
    except AppNotFound:
        return None


def _release_config_changed(before: AppConfig | None, after: AppConfig) -> bool:
    """Whether a release's config would differ: the environment or the secret references."""
    return before is not None and (before.environment, before.secrets) != (after.environment, after.secrets)


def _has_release(ctx: Context, app: str) -> bool:
    return ctx.deps.state.get(app).desired is not None or ctx.deps.pointer.get(app) is not None


def _store_and_release(ctx: Context, before: AppConfig | None, config: AppConfig) -> int:
    """Store `config`; when its environment or secrets changed and the app runs a release, start
    a config-only release of it (unless --no-deploy). The answer says which happened."""
    ctx.deps.apps.put(config)
    result: dict[str, Any] = {
        "stored": True,
        "app": config.app,
        "config": config.to_document(),
        "missing_alarms": _missing_alarms(ctx, config),
    }
    lines = [f"app {config.app} stored (repository {config.repository})"]
    code = EXIT_OK
    if _release_config_changed(before, config):
        if ctx.args.no_deploy:
            result["release"] = None
            lines.append(
                "environment/secrets changed; not deployed (--no-deploy): "
                f"`deployer deploy {config.app} --config-only` releases them"
            )
        elif not _has_release(ctx, config.app):
            result["release"] = None
            lines.append("environment/secrets changed; no release yet: the first one uses them")
        else:
            try:
                started = deploy_config(ctx, config.app, "config change")
            except DeployerError as exc:
                result.update(release=None, error=str(exc))
                lines.append(
                    f"environment/secrets changed, but no config-only release started: {exc}\n"
                    f"  run `deployer deploy {config.app} --config-only` once that is resolved"
                )
                code = EXIT_FAILED
            else:
                result["release"] = started["release"]
                lines.append(
                    f"environment/secrets changed: config-only release {started['release']} started "
                    f"(the image of release {started['image_of']})"
                )
                if ctx.args.wait:
                    if not ctx.json:
                        ctx.out.write("\n".join(lines) + "\n")
                    return follow(ctx, config.app, int(started["release"]))
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.out.write("\n".join(lines) + "\n")
    return code


def _config_put(ctx: Context) -> int:
    # `config put FILE`, or `config put APP FILE` to check that the file configures APP.
    app, path = (None, ctx.args.first) if ctx.args.second is None else (ctx.args.first, ctx.args.second)
    config = read_config(path)
    if app is not None and config.app != app:
        raise UsageError(f"{path} configures app {config.app!r}, not {app!r}")
    return _store_and_release(ctx, _stored(ctx, config.app), config)


def _assignments(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"config set: {pair!r} is not KEY=VALUE")
        values[name] = value
    return values


def _changed_environment(ctx: Context, environment: dict[str, str]) -> int:
    before = ctx.deps.apps.get(ctx.args.app)
    try:
        config = AppConfig.parse({**before.to_document(), "environment": environment})
    except InvalidAppConfig as exc:
        raise UsageError(str(exc)) from exc
    return _store_and_release(ctx, before, config)


def _config_set(ctx: Context) -> int:
    before = ctx.deps.apps.get(ctx.args.app)
    return _changed_environment(ctx, {**before.environment, **_assignments(ctx.args.pairs)})


def _config_unset(ctx: Context) -> int:
    before = ctx.deps.apps.get(ctx.args.app)
    missing = sorted(set(ctx.args.names) - set(before.environment))
    if missing:
        raise UsageError(f"config unset: {', '.join(missing)} not in {ctx.args.app}'s environment")
    return _changed_environment(
        ctx, {k: v for k, v in before.environment.items() if k not in set(ctx.args.names)}
    )


def _missing_alarms(ctx: Context, config: AppConfig) -> list[str]:
    """The alarm gates the config names that CloudWatch does not have (a staged release would
    fail at its first stage: docs/stages.md, "Alarm gates"); warned about, the config is stored."""
    if not config.rollout.alarms:
        return []
    found = ctx.deps.alarms.states(config.rollout.alarms)
    missing = [name for name in config.rollout.alarms if name not in found]
    for name in missing:
        ctx.err.write(
            f"warning: alarm {name} does not exist: a staged release of {config.app} fails at its "
            "first stage until it does\n"
        )
    return missing


def _app_put(ctx: Context) -> int:
    path = ctx.args.file or ctx.args.file_option
    if not path or (ctx.args.file and ctx.args.file_option):
        raise UsageError("app put: give the config file once, as FILE or --file FILE")
    config = read_config(path)
    ctx.deps.apps.put(config)
    missing = _missing_alarms(ctx, config)
    if ctx.json:
        ctx.emit_json(
            {"stored": True, "app": config.app, "config": config.to_document(), "missing_alarms": missing}
        )
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


def _release_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-deploy",
        action="store_true",
        help="store only; a changed environment/secrets is not released until the next release",
    )
    parser.add_argument("--wait", action="store_true", help="follow the config-only release to its verdict")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds --wait waits")
    parser.add_argument("--function", help=f"rollback function to invoke (default: ${FUNCTION_ENV})")


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
    _release_options(put)
    put.set_defaults(run=_config_put)
    set_ = verbs.add_parser(
        "set",
        help="set environment variables of a stored app config and release them (config-only)",
        parents=[common],
    )
    set_.add_argument("app")
    set_.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    _release_options(set_)
    set_.set_defaults(run=_config_set)
    unset = verbs.add_parser(
        "unset", help="remove environment variables and release the change (config-only)", parents=[common]
    )
    unset.add_argument("app")
    unset.add_argument("names", nargs="+", metavar="KEY")
    _release_options(unset)
    unset.set_defaults(run=_config_unset)
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
