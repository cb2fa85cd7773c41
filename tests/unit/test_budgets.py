"""Budgets that fit (docs/architecture.md, Budgets): a function's AWS call gives up well before the
function's own timeout, and the CLI's invocation of an action is attempted once, never re-sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff, RetryContext
from deployer import runtime
from deployer.aws import CLI_CONFIG, LAMBDA_CONFIG, total_attempts, worst_case_seconds
from deployer.cli.context import CliClients

from tests.conftest import REGION

pytestmark = pytest.mark.unit

# The services the functions call (their adapters and handlers).
FUNCTION_SERVICES = ("dynamodb", "ssm", "ec2", "autoscaling", "sns", "ecr")
STACK_ENV = {
    "APPS_TABLE": "AppsTable",
    "APP_STATE_TABLE": "AppStateTable",
    "RELEASES_TABLE": "ReleasesTable",
    "HOST_OUTCOMES_TABLE": "HostOutcomesTable",
    "IDEMPOTENCY_TABLE": "IdempotencyTable",
    "SWAP_DOCUMENT_NAME": "deployer-swap",
    "COMMAND_LOG_GROUP": "/deployer/test/swap",
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    # only loopback traffic, never through a proxy
    "NO_PROXY": "127.0.0.1",
}


def function_timeouts(template: dict[str, Any]) -> dict[str, int]:
    """Every function's Timeout (its own, or the Globals one), from the deployable template."""
    default = template["Globals"]["Function"]["Timeout"]
    return {
        name: int(resource["Properties"].get("Timeout", default))
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


@pytest.fixture
def stack_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stack's environment, as a function or an operator's shell has it (no AWS is called)."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in STACK_ENV.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield
    runtime.reset()


def cli_clients(endpoint_url: str | None = None) -> CliClients:
    """The client factory the CLI hands the core for a command (cli.context.build_deps, with the
    global options --region and --endpoint-url)."""
    return CliClients(boto3.session.Session(region_name=REGION), endpoint_url)


class FailsOnce:
    """An AWS endpoint on 127.0.0.1 that answers the first request with a 500 and the next ones
    with `answer`; it counts what reached it."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.requests: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests.append(self.path)
                if len(endpoint.requests) == 1:
                    status, headers, body = 500, {"x-amzn-ErrorType": "ServiceException"}, {"message": "boom"}
                else:
                    status, headers, body = 200, {}, answer
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FailsOnce:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ inside a function


def test_a_functions_aws_call_gives_up_within_a_third_of_every_functions_timeout(
    template: dict[str, Any],
) -> None:
    # Given every function of the stack and its timeout
    timeouts = function_timeouts(template)
    assert timeouts

    # When a call runs into every timeout and every backoff of the functions' config
    worst = worst_case_seconds(LAMBDA_CONFIG)

    # Then it has given up with two thirds of the shortest function's time left
    assert {name: worst < timeout / 3 for name, timeout in timeouts.items()} == dict.fromkeys(timeouts, True)


def test_the_worst_case_counts_botocores_longest_backoff_before_each_retry() -> None:
    # Given botocore's standard backoff with its jitter at the maximum
    backoff = ExponentialBackoff(random=lambda: 1.0)
    attempts = total_attempts(LAMBDA_CONFIG)
    sleeps = [backoff.delay_amount(RetryContext(attempt_number=n)) for n in range(1, attempts)]

    # When the worst case is computed
    worst = worst_case_seconds(LAMBDA_CONFIG)

    # Then it is every attempt timing out plus every one of those sleeps
    timeouts = attempts * (LAMBDA_CONFIG.connect_timeout + LAMBDA_CONFIG.read_timeout)
    assert sleeps
    assert worst >= timeouts + sum(sleeps)


def test_every_client_a_function_builds_carries_the_functions_budget(stack_env: None) -> None:
    # Given a function's adapters, wired from its environment as every handler wires them
    deps = runtime.deps()

    # When it builds a client for each service it calls
    configs = {service: deps.clients.client(service).meta.config for service in FUNCTION_SERVICES}

    # Then each one retries and times out as LAMBDA_CONFIG says
    for service, config in configs.items():
        attempts = total_attempts(LAMBDA_CONFIG)
        assert config.retries == {"mode": "standard", "total_max_attempts": attempts}, service
        assert (config.connect_timeout, config.read_timeout) == (
            LAMBDA_CONFIG.connect_timeout,
            LAMBDA_CONFIG.read_timeout,
        ), service
        assert "deployer/0.1" in config.user_agent_extra


# ------------------------------------------------------------------ the operator CLI


def test_the_clis_reads_and_writes_carry_the_clis_budget(stack_env: None) -> None:
    # Given the client factory the CLI builds for a command
    clients = cli_clients()

    # When it builds the clients its commands read and write with (logs: FilterLogEvents)
    configs = {service: clients.client(service).meta.config for service in ("logs", *FUNCTION_SERVICES)}

    # Then each one retries and times out as CLI_CONFIG says, not as a function's calls do
    for service, config in configs.items():
        attempts = total_attempts(CLI_CONFIG)
        assert config.retries == {"mode": "standard", "total_max_attempts": attempts}, service
        assert (config.connect_timeout, config.read_timeout) == (
            CLI_CONFIG.connect_timeout,
            CLI_CONFIG.read_timeout,
        ), service
        assert "deployer-cli/0.1" in config.user_agent_extra


def test_the_clis_invoke_client_makes_one_attempt_and_outwaits_the_rollback_function(
    stack_env: None, template: dict[str, Any]
) -> None:
    # Given the rollback function's timeout
    rollback_timeout = function_timeouts(template)["RollbackFunction"]

    # When the CLI builds the client it invokes the function with
    config = cli_clients().client("lambda").meta.config

    # Then it attempts once, and waits longer than the function may run
    assert config.retries["total_max_attempts"] == 1
    assert config.read_timeout > rollback_timeout


def test_an_invocation_that_fails_once_reaches_the_function_once(stack_env: None) -> None:
    # Given a Lambda endpoint that fails the first request and would accept a second one
    with FailsOnce({"status": "ok"}) as endpoint:
        client = cli_clients(endpoint.url).client("lambda")

        # When the CLI invokes the rollback function through it
        with pytest.raises(ClientError) as failed:
            client.invoke(FunctionName="deployer-Rollback", Payload=b'{"action": "rollback", "app": "web"}')

    # Then the operator sees the failure, and the action was sent exactly once
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert endpoint.requests == ["/2015-03-31/functions/deployer-Rollback/invocations"]


def test_the_clis_other_calls_retry_a_transient_failure(stack_env: None) -> None:
    # Given the same endpoint, standing in for SSM (a read: safe to repeat)
    pointer = {"Parameter": {"Name": "/deployer/web/release", "Value": "3", "Type": "String"}}
    with FailsOnce(pointer) as endpoint:
        ssm = cli_clients(endpoint.url).client("ssm")

        # When the CLI reads the release pointer through it
        value = ssm.get_parameter(Name="/deployer/web/release")["Parameter"]["Value"]

    # Then the 500 was retried (CLI_CONFIG), so the invocation test's single request is a decision
    assert (value, len(endpoint.requests)) == ("3", 2)
