"""One botocore configuration and a client factory shared by every adapter.

Clients are created on demand, never at import time: tests activate moto first, and a cold
start should not pay for clients a code path does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.config import Config

if TYPE_CHECKING:
    import boto3

# AWS APIs throttle and fail transiently; retries are configuration, not loops.
BOTO_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=20,
    user_agent_extra="deployer/0.1",
)


class ClientFactory:
    """Creates (and caches) boto3 clients from one session with the shared config."""

    def __init__(self, session: boto3.session.Session | None = None, region: str | None = None) -> None:
        self._session = session
        self._region = region
        self._clients: dict[str, Any] = {}

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            import boto3  # noqa: PLC0415 - deferred: only paths that call AWS pay for it

            self._session = boto3.session.Session(region_name=self._region)
        return self._session

    def client(self, service: str) -> Any:
        """A client for `service`, shared by every caller of this factory."""
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=BOTO_CONFIG)  # type: ignore[call-overload]
        return self._clients[service]
