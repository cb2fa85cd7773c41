"""The stack's names for the CLI, found by itself: `--stack NAME` (or DEPLOYER_STACK, default
`deployer`), its outputs read with one DescribeStacks and cached per endpoint, profile, region
and stack (CACHE_SECONDS). A variable already in the environment (APPS_TABLE, ...) wins over the
output, and when every one is set, nothing is read."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deployer.adapters import error_code
from deployer.cli.context import DIAGNOSE_DOCUMENT_ENV, UsageError
from deployer.errors import AwsCallFailed

STACK_ENV = "DEPLOYER_STACK"
CACHE_ENV = "DEPLOYER_STACK_CACHE"
DEFAULT_STACK = "deployer"
# A redeployed stack may rename a table; ten minutes bounds how long a stale name is used.
CACHE_SECONDS = 600

# Output -> the variable the CLI reads it from (README, "Deploy to AWS").
OUTPUT_ENV: dict[str, str] = {
    "AppsTableName": "APPS_TABLE",
    "AppStateTableName": "APP_STATE_TABLE",
    "ReleasesTableName": "RELEASES_TABLE",
    "HostOutcomesTableName": "HOST_OUTCOMES_TABLE",
    "IdempotencyTableName": "IDEMPOTENCY_TABLE",
    "SwapDocumentName": "SWAP_DOCUMENT_NAME",
    "CommandLogGroupName": "COMMAND_LOG_GROUP",
    "ParameterPrefix": "PARAMETER_PREFIX",
    "DiagnoseDocumentName": DIAGNOSE_DOCUMENT_ENV,
}


def stack_name(args: Any, environ: Mapping[str, str]) -> str:
    return str(getattr(args, "stack", None) or environ.get(STACK_ENV) or DEFAULT_STACK)


def cache_path(environ: Mapping[str, str]) -> Path:
    """DEPLOYER_STACK_CACHE, else `$XDG_CACHE_HOME/deployer/stacks.json` (~/.cache by default)."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "deployer" / "stacks.json"


def describe_stack(cloudformation: Any, stack: str) -> dict[str, Any]:
    """The stack's DescribeStacks answer; UsageError when it does not exist."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack).get("Stacks", [])
    except ClientError as exc:
        if error_code(exc) == "ValidationError":
            raise UsageError(
                f"stack {stack} not found: name it with --stack or {STACK_ENV}, or check the region"
            ) from exc
        raise AwsCallFailed(f"reading stack {stack} failed: {error_code(exc)}") from exc
    if not stacks:
        raise UsageError(f"stack {stack} not found: name it with --stack or {STACK_ENV}, or check the region")
    return dict(stacks[0])


def outputs_of(described: Mapping[str, Any]) -> dict[str, str]:
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in described.get("Outputs", [])}


def stack_outputs(  # noqa: PLR0917 - where to read and where to cache
    session: Any,
    stack: str,
    endpoint: str | None,
    config: Any,
    environ: Mapping[str, str],
    now: float | None = None,
) -> dict[str, str]:
    """The stack's outputs: from the cache when fresh, else one DescribeStacks (then cached)."""
    key = "|".join([endpoint or "aws", session.profile_name or "", session.region_name or "", stack])
    path = cache_path(environ)
    now = time.time() if now is None else now
    try:
        cache: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and now - float(entry.get("at", 0)) < CACHE_SECONDS:
        return dict(entry.get("outputs", {}))
    cloudformation = session.client("cloudformation", config=config, endpoint_url=endpoint)
    outputs = outputs_of(describe_stack(cloudformation, stack))
    cache[key] = {"at": now, "outputs": outputs}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written costs one DescribeStacks per command
    return outputs


def resolved_environment(
    args: Any, environ: Mapping[str, str], session: Any, endpoint: str | None, config: Any
) -> dict[str, str]:
    """`environ` with every stack variable it lacks taken from the stack's outputs."""
    env = dict(environ)
    if all(env.get(name) for name in OUTPUT_ENV.values()):
        return env
    outputs = stack_outputs(session, stack_name(args, environ), endpoint, config, environ)
    for output, name in OUTPUT_ENV.items():
        if not env.get(name) and outputs.get(output):
            env[name] = outputs[output]
    return env
