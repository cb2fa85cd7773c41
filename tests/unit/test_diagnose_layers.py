"""The agent's diagnose verdict: the first failing layer, in the order a failure in one explains
failures in the next (docker, app, proxy, registry), read from host/agent.py itself."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest
from deployer.cli.diagnose import LAYERS
from deployer.cli.logs import app_log_group

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deployer_agent_under_test", ROOT / "host" / "agent.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AGENT = agent()


def check(layer: str, ok: bool) -> dict[str, Any]:
    return {"name": f"{layer} check", "layer": layer, "ok": ok, "detail": ""}


def test_every_check_passing_names_no_layer() -> None:
    assert (
        AGENT.failing_layer([check(layer, True) for layer in ("docker", "app", "proxy", "registry")])
        == "none"
    )
    assert AGENT.failing_layer([]) == "none"


@pytest.mark.parametrize(
    ("failing", "named"),
    [
        ({"docker"}, "docker"),
        ({"docker", "app", "proxy"}, "docker"),  # a stopped engine explains the rest
        ({"app", "proxy"}, "app"),  # an unhealthy app fails the check through nginx too
        ({"proxy"}, "proxy"),
        ({"registry"}, "registry"),
        ({"proxy", "registry"}, "proxy"),  # what serves traffic now comes before the next pull
    ],
)
def test_the_first_failing_layer_in_dependency_order_is_named(failing: set[str], named: str) -> None:
    checks = [check(layer, layer not in failing) for layer in ("registry", "proxy", "app", "docker")]
    assert AGENT.failing_layer(checks) == named


def test_the_layers_are_the_ones_the_cli_accepts() -> None:
    assert set(AGENT.DIAGNOSE_LAYERS) | {"none"} == LAYERS


def test_a_report_too_long_for_ssm_loses_log_lines_first_and_stays_json() -> None:
    report = {"layer": "app", "checks": [check("app", False)], "log_tail": ["x" * 190] * 15}
    line = AGENT.report_line(report)
    assert len(line) <= AGENT.SUMMARY_MAX_CHARS
    parsed = json.loads(line)
    assert parsed["checks"] == report["checks"]
    assert 0 < len(parsed["log_tail"]) < 15


def test_the_awslogs_driver_ships_to_the_group_and_stream_deployer_logs_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SSM_INSTANCE_ID", "i-0123456789abcdef0")
    monkeypatch.setenv("AWS_SSM_REGION_NAME", "eu-west-1")
    options = AGENT.awslogs_defaults(dict(AGENT.HOST_DEFAULTS), "web", "deployer-web-blue", [])
    assert options == [
        f"awslogs-group={app_log_group('web')}",
        "awslogs-stream=i-0123456789abcdef0/deployer-web-blue",
        "awslogs-region=eu-west-1",
    ]
    given = AGENT.awslogs_defaults(dict(AGENT.HOST_DEFAULTS), "web", "c", ["awslogs-group=/custom"])
    assert given[0] == "awslogs-group=/custom"
    assert not any(o.startswith("awslogs-group=/deployer") for o in given)
