"""Lambda stand-in: invokes `functions/<name>/app.py:handler` the way the Lambda service does.

Each function gets its own warm worker process (`localcloud.aws.lambda_worker`), started on first
use with exactly the environment the stack gave that function (`GetFunctionConfiguration`, see
`localcloud.aws.stack`), plus the variables the Lambda runtime itself sets and the moto endpoint.
The module is imported once per worker, like a warm container, so import-time reads of the
environment behave as in Lambda, and functions never share module state. Invocations of one
function run one at a time; a timed out invocation kills its worker (the next one starts a
fresh "container").
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from localcloud.aws.stack import Function


class LambdaError(RuntimeError):
    """The handler raised, timed out, or failed to import."""

    def __init__(self, function: str, error: dict[str, Any]) -> None:
        self.function = function
        self.error = error
        super().__init__(f"{function}: {error.get('errorType')}: {error.get('errorMessage')}")


@dataclass
class Invocation:
    function: str
    event: Any
    result: Any = None
    error: dict[str, Any] | None = None
    seconds: float = 0.0
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class _Worker:
    def __init__(self, fn: Function, env: dict[str, str], log_path: Path) -> None:
        self.fn = fn
        self.lock = threading.Lock()
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        task_root = str(fn.code_dir)
        module_handler = fn.handler
        self.log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("lambda_worker.py")),
                task_root,
                module_handler,
                str(req_r),
                str(resp_w),
            ],
            env=env,
            cwd=task_root,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=(req_r, resp_w),
        )
        os.close(req_r)
        os.close(resp_w)
        self.requests: TextIO = os.fdopen(req_w, "w", encoding="utf-8")
        self.responses: TextIO = os.fdopen(resp_r, "r", encoding="utf-8")
        hello = self._read(timeout=60)
        if hello is None:
            self.close()
            raise LambdaError(fn.logical_id, {"errorType": "InitTimeout", "errorMessage": "no answer"})

    def _read(self, timeout: float) -> dict[str, Any] | None:
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.responses.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            return None
        return dict(json.loads(box[0]))

    def invoke(self, event: Any, request_id: str) -> dict[str, Any]:
        self.requests.write(json.dumps({"event": event, "request_id": request_id}) + "\n")
        self.requests.flush()
        out = self._read(timeout=self.fn.timeout + 1)
        if out is None:
            self.close()
            return {
                "error": {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {self.fn.timeout}.00 seconds",
                }
            }
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.requests.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class LambdaService:
    """Invokes the stack's functions by logical id."""

    def __init__(
        self,
        functions: dict[str, Function],
        aws_env: dict[str, str],
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        roles_dir: Path | None = None,
    ) -> None:
        """`roles_dir` holds `<logical id>.json` per function (`permissions.RoleCheck`'s inputs):
        a function with one has each AWS call checked against its role."""
        self.roles_dir = roles_dir
        self.functions = functions
        self.aws_env = aws_env
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self._workers: dict[str, _Worker] = {}
        self._start_lock = threading.Lock()
        self.invocations: list[Invocation] = []
        self._inv_lock = threading.Lock()
        log_dir.mkdir(parents=True, exist_ok=True)

    def environment(self, lid: str) -> dict[str, str]:
        """The process environment of one function: runtime variables + the function's own."""
        fn = self.functions[lid]
        passed = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "LOCALCLOUD_CALL_LOG"}
        base = {k: v for k, v in os.environ.items() if k in passed}
        runtime = {
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            "LAMBDA_TASK_ROOT": str(fn.code_dir),
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "_HANDLER": fn.handler,
            "TZ": ":UTC",
            "LOCALCLOUD_TIMEOUT": str(fn.timeout),
            # No X-Ray daemon here: Powertools' Tracer becomes a no-op instead of logging errors.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
        role = {}
        if self.roles_dir is not None and (self.roles_dir / f"{lid}.json").exists():
            role = {"LOCALCLOUD_ROLE": str(self.roles_dir / f"{lid}.json")}
        return {**base, **runtime, **self.aws_env, **fn.environment, **self.extra_env, **role}

    def _worker(self, lid: str) -> _Worker:
        with self._start_lock:
            w = self._workers.get(lid)
            if w is None or not w.alive():
                if lid not in self.functions:
                    raise LambdaError(
                        lid,
                        {
                            "errorType": "ResourceNotFoundException",
                            "errorMessage": f"no function {lid} in the stack",
                        },
                    )
                w = _Worker(self.functions[lid], self.environment(lid), self.log_dir / f"{lid}.log")
                self._workers[lid] = w
            return w

    def retries(self, lid: str) -> int:
        """Retries of an asynchronous invocation (the function's EventInvokeConfig)."""
        fn = self.functions.get(lid)
        return fn.retries if fn is not None else 2

    def by_name(self, name: str) -> str | None:
        """The logical id of the function with this name or ARN."""
        for lid, fn in self.functions.items():
            if name in (fn.name, fn.arn, lid) or name.startswith(fn.arn + ":"):
                return lid
        return None

    def warm(self, *lids: str) -> None:
        """Start workers ahead of time so the first event does not pay the import."""

        def start(lid: str) -> None:
            # a failed start is reported by the invocation that needs the function
            with contextlib.suppress(LambdaError):
                self._worker(lid)

        threads = [threading.Thread(target=start, args=(lid,)) for lid in lids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def invoke(self, lid: str, event: Any) -> Invocation:
        """Synchronous invoke (RequestResponse); the Invocation carries result or error."""
        inv = Invocation(lid, event)
        start = time.monotonic()
        w = self._worker(lid)
        with w.lock:
            if not w.alive():
                w = self._worker(lid)
            out = w.invoke(event, inv.request_id)
        inv.seconds = time.monotonic() - start
        inv.result = out.get("result")
        inv.error = out.get("error")
        with self._inv_lock:
            self.invocations.append(inv)
        return inv

    def call(self, lid: str, event: Any) -> Any:
        """Invoke and return the result, raising LambdaError when the handler failed."""
        inv = self.invoke(lid, event)
        if inv.error:
            raise LambdaError(lid, inv.error)
        return inv.result

    def close(self) -> None:
        for w in list(self._workers.values()):
            w.close()
        self._workers.clear()
