"""`deployer rollback|promote|pause|resume|status`: the rollback function's actions from a shell.

    deployer rollback web [--to 6|v1.4|sha256:...] [--reason TEXT]
    deployer promote web --to v1.5 [--reason TEXT]     deploy a tag, digest or release explicitly
    deployer pause web [--reason TEXT]                 pushes are recorded PENDING, not deployed
    deployer resume web                                the newest pending release starts
    deployer status web [--limit N]

With `--function NAME` (or DEPLOYER_ROLLBACK_FUNCTION) the request goes to the stack's rollback
function (`lambda:InvokeFunction` is then the only right the caller needs); without it, the same
code runs here with the caller's credentials and the tables from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from deployer.errors import DeployerError

if TYPE_CHECKING:
    from deployer.rollout import Deps

FUNCTION_ENV = "DEPLOYER_ROLLBACK_FUNCTION"


def request_from(args: argparse.Namespace) -> dict[str, Any]:
    """The direct-invocation payload for parsed arguments (the function's documented shape)."""
    payload: dict[str, Any] = {"action": args.command, "app": args.app}
    for name in ("to", "reason", "limit"):
        value = getattr(args, name, None)
        if value is not None:
            payload[name] = value
    return payload


def _invoke(function: str, payload: dict[str, Any], deps: Deps | None) -> dict[str, Any]:
    import boto3  # noqa: PLC0415 - only this path talks to Lambda

    client = deps.clients.client("lambda") if deps is not None else boto3.client("lambda")
    response = client.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        message = body.get("errorMessage") if isinstance(body, dict) else body
        raise DeployerError(f"{function}: {message}")
    return body if isinstance(body, dict) else {"result": body}


def _run(args: argparse.Namespace, deps: Deps, out: TextIO) -> int:
    from deployer.lifecycle import LifecycleDeps  # noqa: PLC0415
    from deployer.lifecycle_handlers import handle_operation  # noqa: PLC0415

    payload = request_from(args)
    function = args.function or os.environ.get(FUNCTION_ENV)
    result = (
        _invoke(function, payload, deps)
        if function
        else handle_operation(LifecycleDeps.from_core(deps), payload)
    )
    out.write(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return 0


def _reference(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("app")
    parser.add_argument(
        "--function", help=f"rollback function to invoke (default: ${FUNCTION_ENV}, else run here)"
    )
    parser.set_defaults(run=_run)
    return parser


def _register_rollback(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _parser(sub, "rollback", "roll an app back (default: to the previous SUCCEEDED release)")
    parser.add_argument("--to", type=_reference, help="release number, tag or sha256 digest")
    parser.add_argument("--reason")


def _register_promote(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _parser(sub, "promote", "deploy a tag, digest or release explicitly")
    parser.add_argument("--to", type=_reference, required=True, help="tag, sha256 digest or release number")
    parser.add_argument("--reason")


def _register_pause(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _parser(sub, "pause", "stop automatic deploys of an app (pushes wait as PENDING)").add_argument(
        "--reason"
    )


def _register_resume(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _parser(sub, "resume", "resume automatic deploys; the newest pending release starts")


def _register_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _parser(
        sub, "status", "pointer, deploy in progress, pause flag, refused digests, recent releases"
    ).add_argument("--limit", type=int, default=10)


OPERATION_COMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "rollback": _register_rollback,
    "promote": _register_promote,
    "pause": _register_pause,
    "resume": _register_resume,
    "status": _register_status,
}
