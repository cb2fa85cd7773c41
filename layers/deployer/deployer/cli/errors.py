"""Any failure as one line and an exit code: configuration problems exit 4, the rest 1.

The adapters chain the botocore error they translate (`raise ... from`), so the cause says
whether credentials, the region or the endpoint are the problem.
"""

from __future__ import annotations

from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from deployer.cli.context import EXIT_FAILED, EXIT_USAGE, UsageError
from deployer.errors import (
    AppNotFound,
    DeployerError,
    InvalidAppConfig,
    InvalidEvent,
    InvalidSettings,
    ReleaseNotFound,
)

_USAGE_ERRORS = (UsageError, AppNotFound, InvalidAppConfig, InvalidEvent, InvalidSettings, ReleaseNotFound)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for a failure."""
    for cause in _chain(exc):
        if isinstance(cause, NoCredentialsError | PartialCredentialsError):
            return (
                "no AWS credentials found: use --profile, set AWS_PROFILE, or export "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                EXIT_USAGE,
            )
        if isinstance(cause, ProfileNotFound):
            return one_line(f"{cause}: check --profile / AWS_PROFILE"), EXIT_USAGE
        if isinstance(cause, NoRegionError):
            return "no AWS region: use --region or set AWS_REGION", EXIT_USAGE
        if isinstance(cause, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
            endpoint = getattr(cause, "kwargs", {}).get("endpoint_url", "the endpoint")
            return one_line(f"cannot reach {endpoint}: check --endpoint-url, the network and the region"), (
                EXIT_FAILED
            )
    if isinstance(exc, _USAGE_ERRORS):
        return one_line(str(exc)), EXIT_USAGE
    if isinstance(exc, DeployerError):
        return one_line(str(exc)), EXIT_FAILED
    return one_line(f"{type(exc).__name__}: {exc}"), EXIT_FAILED
