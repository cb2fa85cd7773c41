"""What every command gets: the parsed global options, the core's adapters built lazily for an
interactive caller, and the output (rich console or JSON).

Exit codes (docs/runbook.md): 0 succeeded; 1 failed; 2 failed and rolled back; 3 cancelled;
4 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from deployer.aws import CLI_CONFIG, INVOKE_CONFIG, ClientFactory
from deployer.errors import DeployerError

if TYPE_CHECKING:
    import boto3
    from rich.console import Console

    from deployer.wiring import Adapters

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ROLLED_BACK = 2
EXIT_CANCELLED = 3
EXIT_USAGE = 4

FUNCTION_ENV = "DEPLOYER_ROLLBACK_FUNCTION"
DIAGNOSE_DOCUMENT_ENV = "DEPLOYER_DIAGNOSE_DOCUMENT"


class UsageError(DeployerError):
    """Bad command line or configuration (exit 4)."""


class CliClients(ClientFactory):
    """The core's client factory with the CLI's budgets (deployer.aws) and an optional endpoint
    override. The CLI calls lambda only to Invoke an action, which is never retried."""

    def __init__(self, session: boto3.session.Session, endpoint_url: str | None) -> None:
        super().__init__(session=session, config=CLI_CONFIG)
        self._endpoint_url = endpoint_url

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = INVOKE_CONFIG if service == "lambda" else self._config
            self._clients[service] = self.session.client(  # type: ignore[call-overload]
                service, config=config, endpoint_url=self._endpoint_url
            )
        return self._clients[service]


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    err: TextIO
    deps_given: Adapters | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _deps: Adapters | None = field(default=None, init=False)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    _env: dict[str, str] | None = field(default=None, init=False)

    @property
    def deps(self) -> Adapters:
        if self._deps is None:
            self._deps = self.deps_given or build_deps(self.args, self.env)
        return self._deps

    @property
    def env(self) -> dict[str, str]:
        """The environment with the stack's names filled in from its outputs (deployer.cli.stack);
        tests that give their own adapters use the environment as it is."""
        if self._env is None:
            if self.deps_given is not None:
                self._env = dict(os.environ)
            else:
                from deployer.cli.stack import resolved_environment  # noqa: PLC0415

                session = cli_session(self.args)
                endpoint = getattr(self.args, "endpoint_url", None) or None
                self._env = resolved_environment(self.args, os.environ, session, endpoint, CLI_CONFIG)
        return self._env

    @property
    def ld(self) -> Adapters:
        """The same adapters (one composition root, deployer.wiring)."""
        return self.deps

    def console(self) -> Console:
        from rich.console import Console  # noqa: PLC0415 - the Lambda layer has no rich

        console = Console(file=self.out, highlight=False)
        if not console.is_terminal:
            # Piped or captured: no terminal width to fit, keep rows on one line.
            console = Console(file=self.out, highlight=False, width=200)
        return console

    def emit_json(self, data: Any) -> None:
        self.out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def cli_session(args: argparse.Namespace) -> boto3.session.Session:
    import boto3  # noqa: PLC0415

    region = getattr(args, "region", None) or os.environ.get("AWS_REGION") or None
    return boto3.session.Session(profile_name=getattr(args, "profile", None) or None, region_name=region)


def build_deps(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Adapters:
    """The core's adapters from the environment (the stack's outputs) and the global options."""
    from deployer.settings import Settings  # noqa: PLC0415
    from deployer.wiring import Adapters  # noqa: PLC0415

    env = dict(os.environ if environ is None else environ)
    region = getattr(args, "region", None)
    if region:
        env["AWS_REGION"] = region
    settings = Settings.from_env(env)
    session = cli_session(args)
    endpoint = getattr(args, "endpoint_url", None) or None
    return Adapters.from_settings(settings, clients=CliClients(session, endpoint))
