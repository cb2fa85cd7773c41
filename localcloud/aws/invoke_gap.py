"""moto Lambda gap: `Invoke` of a function of the local stack runs it in the Lambda stand-in.

moto's `Invoke` runs a function in a Docker image of the Lambda runtime, or answers a canned
"Simple Lambda happy path OK". While a local cloud runs, `Invoke` of one of the stack's functions
goes to its warm worker (`localcloud.aws.lambdas`) instead, so `aws lambda invoke` and the `deployer`
CLI (DEPLOYER_ROLLBACK_FUNCTION) reach the real handler, as in AWS:
- `RequestResponse`: the handler's result as the payload; a handler error is the payload
  `{"errorType", "errorMessage"}` with the header `X-Amz-Function-Error: Unhandled`;
- `Event`: accepted (202), run in the background;
- `DryRun`: nothing runs.
Functions moto knows but the stand-in does not keep moto's behaviour. Installed by
`LocalCloud.start`, undone by `stop`. Development tooling only.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from localcloud.aws.lambdas import LambdaService

_state: dict[str, Any] = {"original": None, "lambdas": None}
_lock = threading.Lock()


def install(lambdas: LambdaService) -> None:
    from moto.awslambda.models import LambdaFunction  # noqa: PLC0415 - moto is heavy

    with _lock:
        if _state["original"] is None:
            _state["original"] = LambdaFunction.invoke
        _state["lambdas"] = lambdas
        original = _state["original"]

        def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> str | bytes:
            service: LambdaService | None = _state["lambdas"]
            lid = service.by_name(self.function_name) if service is not None else None
            if service is None or lid is None:
                return original(self, body, request_headers, response_headers)  # type: ignore[no-any-return]
            event = json.loads(body) if body else {}
            kind = request_headers.get("x-amz-invocation-type", "RequestResponse")
            if kind == "DryRun":
                return b""
            if kind == "Event":
                threading.Thread(target=service.invoke, args=(lid, event), daemon=True).start()
                return b""
            inv = service.invoke(lid, event)
            if inv.error is not None:
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps(inv.error).encode()
            return json.dumps(inv.result).encode()

        LambdaFunction.invoke = invoke  # type: ignore[method-assign]


def uninstall() -> None:
    from moto.awslambda.models import LambdaFunction  # noqa: PLC0415

    with _lock:
        if _state["original"] is not None:
            LambdaFunction.invoke = _state["original"]  # type: ignore[method-assign]
        _state["original"] = None
        _state["lambdas"] = None
