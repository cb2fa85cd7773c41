"""The botocore configurations (one per kind of caller, each within its budget) and a client
factory shared by every adapter.

Clients are created on demand, never at import time: tests activate moto first, and a cold
start should not pay for clients a code path does not use.

Budgets (docs/architecture.md, Budgets): a call's worst case is every attempt timing out, plus
botocore's longest backoff sleep before each retry. `worst_case_seconds` computes it; the tests
hold it under a third of every function's timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.config import Config

if TYPE_CHECKING:
    import boto3

# Inside a function (60 s): 3 attempts of 1 s connect (TLS included) + 4 s read, plus at most
# 1 + 2 s backoff = 18 s, under a third of the timeout, so the handler fails cleanly instead of
# being killed. "standard", not "adaptive": adaptive's client-side rate limiter may sleep without bound.
LAMBDA_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=1,
    read_timeout=4,
    user_agent_extra="deployer/0.1",
)
# The operator CLI's reads and writes: a person waits, nothing kills the process; log searches
# (FilterLogEvents) may take seconds. 3 x (3 + 15) + 3 = 57 s at worst.
CLI_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=3,
    read_timeout=15,
    user_agent_extra="deployer-cli/0.1",
)
# lambda Invoke from the CLI starts an action (rollback, promote...): botocore retries read
# timeouts and 5xx by re-sending, which could start a second one. One attempt, and a read timeout
# beyond the function's own 60 s, so a slow invocation is waited for, never re-sent.
INVOKE_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=3,
    read_timeout=70,
    user_agent_extra="deployer-cli/0.1",
)

# A call that starts work (SSM SendCommand) must not be re-sent by botocore: after a read
# timeout SSM may have accepted the first request, and a retry would start a second command.
# Clients for such calls keep their factory's timeouts with this one change; the caller answers a
# timeout by looking the result up (the swap's send claim, then `Fleet.find`).
SINGLE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})

# botocore.retries.standard.ExponentialBackoff: the sleep before retry n (n = 1, 2...) is
# rand(0, 1) * min(2 ** (n - 1), 20); the worst case takes rand = 1. (botocore's opt-in
# AWS_NEW_RETRIES_2026 path may add up to 5 s per retry for an x-amz-retry-after header: not counted.)
_BACKOFF_BASE = 2
_BACKOFF_CAP = 20


def total_attempts(config: Config) -> int:
    """Total attempts (first try included) a client built with `config` makes per call.

    In a botocore Config, `retries["max_attempts"]` counts retries (botocore adds one, see
    botocore/args.py `_compute_retry_max_attempts`) while `total_max_attempts` counts attempts.
    """
    options: Any = config  # Config sets its options as attributes at run time: no types for them
    retries: dict[str, Any] = options.retries or {}
    if retries.get("mode") != "standard":
        # adaptive adds an unbounded rate limiter; legacy's policy depends on the service model.
        raise ValueError(f"only the standard retry mode has a known budget, not {retries.get('mode')!r}")
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    if "max_attempts" in retries:
        return int(retries["max_attempts"]) + 1
    raise ValueError("set retries['total_max_attempts']: the default depends on the service and environment")


def worst_case_seconds(config: Config) -> float:
    """Longest a single call can take with `config`: every attempt runs into its connect and read
    timeouts, and every retry sleeps botocore's longest backoff."""
    attempts = total_attempts(config)
    options: Any = config
    per_attempt = float(options.connect_timeout) + float(options.read_timeout)
    backoff = sum(min(_BACKOFF_BASE ** (retry - 1), _BACKOFF_CAP) for retry in range(1, attempts))
    return float(attempts * per_attempt + backoff)


class ClientFactory:
    """Creates (and caches) boto3 clients from one session with one config (LAMBDA_CONFIG unless
    the caller is not a function)."""

    def __init__(
        self,
        session: boto3.session.Session | None = None,
        region: str | None = None,
        config: Config = LAMBDA_CONFIG,
    ) -> None:
        self._session = session
        self._region = region
        self._config = config
        self._clients: dict[str, Any] = {}

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            import boto3  # noqa: PLC0415 - deferred: only paths that call AWS pay for it

            self._session = boto3.session.Session(region_name=self._region)
        return self._session

    @property
    def config(self) -> Config:
        return self._config

    def client(self, service: str) -> Any:
        """A client for `service`, shared by every caller of this factory."""
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=self._config)  # type: ignore[call-overload]
        return self._clients[service]

    def single_attempt_client(self, service: str) -> Any:
        """A client for `service` whose calls are attempted once (SINGLE_ATTEMPT), for calls
        that are not idempotent; same session and timeouts as `client`."""
        key = f"{service}#once"
        if key not in self._clients:
            config = self._config.merge(SINGLE_ATTEMPT)
            self._clients[key] = self.session.client(service, config=config)  # type: ignore[call-overload]
        return self._clients[key]
