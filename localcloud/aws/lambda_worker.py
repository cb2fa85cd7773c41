"""One warm Lambda "container": a child process that imports one handler once and serves
invocations sent by `localcloud.aws.lambdas` over a pipe (one JSON line each way).

Run as `python -m localcloud.aws.lambda_worker <task_root> <module.handler> <req_fd> <resp_fd>`
with the function's environment already set, so module-level code (Powertools, settings)
sees exactly what it would see in Lambda. The handler's own stdout/stderr are its logs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, request_id: str, timeout_s: int) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        region = os.environ.get("AWS_REGION", "us-east-1")
        account = os.environ.get("LOCALCLOUD_ACCOUNT", "123456789012")
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{self.function_name}"
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _log_api_calls(path: str) -> None:
    """Append `<function> <operation> <seconds>` per AWS API call to ``path`` (latency breakdowns)."""
    from botocore.client import BaseClient  # noqa: PLC0415 - only when asked

    original = BaseClient._make_api_call
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "?")

    def timed(self: Any, operation: str, params: Any) -> Any:
        started = time.monotonic()
        try:
            return original(self, operation, params)
        finally:
            with open(path, "a", encoding="utf-8") as out:
                out.write(f"{time.time():.3f} {name} {operation} {time.monotonic() - started:.3f}\n")

    BaseClient._make_api_call = timed  # type: ignore[method-assign]


def _enforce_role(path: str) -> None:
    """Check every AWS call against the function's role (localcloud.aws.permissions), refusing
    what the role does not allow as AWS would; each refusal is also appended to the file named
    in the role file's `denied_log`. permissions.py is loaded by path: the function's import path
    stays what Lambda gives it."""
    import importlib.util  # noqa: PLC0415

    from botocore.client import BaseClient  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location(
        "_localcloud_permissions", os.path.join(os.path.dirname(os.path.abspath(__file__)), "permissions.py")
    )
    assert spec is not None
    assert spec.loader is not None
    permissions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(permissions)
    with open(path, encoding="utf-8") as handle:
        role = json.load(handle)
    check = permissions.RoleCheck(
        role["function"], role["statements"], role["region"], role["account"], role["topic_keys"]
    )
    original = BaseClient._make_api_call

    def checked(self: Any, operation: str, params: Any) -> Any:
        try:
            check.check(permissions.service_of(self), operation, params)
        except Exception as exc:
            with open(role["denied_log"], "a", encoding="utf-8") as out:
                out.write(f"{role['function']} {operation}: {exc}\n")
            raise
        return original(self, operation, params)

    BaseClient._make_api_call = checked  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    # Run as a file: drop this tooling directory from the path, so the function sees only what
    # Lambda would give it (its task root, the layer's packages).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    task_root, spec, req_fd, resp_fd = argv[0], argv[1], int(argv[2]), int(argv[3])
    sys.path.insert(0, task_root)
    module_name, func_name = spec.rsplit(".", 1)
    timeout_s = int(os.environ.get("LOCALCLOUD_TIMEOUT", "60"))
    requests = os.fdopen(req_fd, "r", encoding="utf-8")
    responses = os.fdopen(resp_fd, "w", encoding="utf-8")
    if os.environ.get("LOCALCLOUD_CALL_LOG"):
        _log_api_calls(os.environ["LOCALCLOUD_CALL_LOG"])
    if os.environ.get("LOCALCLOUD_ROLE"):
        _enforce_role(os.environ.pop("LOCALCLOUD_ROLE"))
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        init_error = None
    except Exception as exc:  # an init error fails every invocation, as in Lambda
        handler = None
        init_error = _error(exc)
    responses.write(json.dumps({"ready": True, "init_error": init_error}) + "\n")
    responses.flush()
    for line in requests:
        req = json.loads(line)
        request_id = req.get("request_id") or str(uuid.uuid4())
        os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Sampled=0"
        if handler is None:
            out: dict[str, Any] = {"error": init_error}
        else:
            try:
                result = handler(req["event"], LambdaContext(request_id, timeout_s))
                out = {"result": result}
            except Exception as exc:
                out = {"error": _error(exc)}
        sys.stdout.flush()
        sys.stderr.flush()
        responses.write(json.dumps(out, default=str) + "\n")
        responses.flush()
    return 0


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
