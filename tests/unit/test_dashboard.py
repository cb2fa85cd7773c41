"""The CloudWatch dashboard shows only metrics that exist: the Deployer metrics the code emits
(under the namespace and service dimension it emits them with), and the AWS metrics of the
stack's own functions and dead-letter queues."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deployer.metrics_names import (
    PROXY_ERRORS,
    PROXY_LATENCY,
    PROXY_NAMESPACE,
    PROXY_REQUESTS,
    DeployMetric,
)
from deployer.observability import Metric

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

CORE = ROOT / "layers" / "deployer" / "deployer"


def dashboard_metrics(template: dict[str, Any]) -> list[list[Any]]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # ${Logical} and ${Logical.Attr} stand for names CloudFormation fills in; keep the reference.
    data = json.loads(re.sub(r"\$\{([A-Za-z0-9:.]+)\}", r"REF(\1)", body))
    return [
        m
        for w in data["widgets"]
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
        if not isinstance(m[0], dict)  # an expression (the proxy widgets' SEARCH)
    ]


def dashboard_expressions(template: dict[str, Any]) -> dict[str, str]:
    """Widget title -> its one expression."""
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    data = json.loads(re.sub(r"\$\{([A-Za-z0-9:.]+)\}", r"REF(\1)", body))
    return {
        w["properties"]["title"]: m[0]["expression"]
        for w in data["widgets"]
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
        if isinstance(m[0], dict)
    }


def emitted() -> dict[str, str]:
    """Metric name -> the constant's name, for every metric constant some core module emits."""
    names: dict[str, str] = {}
    sources = "\n".join(
        p.read_text() for p in CORE.rglob("*.py") if p.name not in {"metrics_names.py", "observability.py"}
    )
    for holder, prefix in ((DeployMetric, "DeployMetric"), (Metric, "Metric")):
        for attr, value in vars(holder).items():
            if attr.isupper() and re.search(rf"\b{prefix}\.{attr}\b", sources):
                names[value] = f"{prefix}.{attr}"
    return names


def test_every_deployer_metric_on_the_dashboard_is_one_the_code_emits(template: dict[str, Any]) -> None:
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    service = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    ours = [m for m in dashboard_metrics(template) if not m[0].startswith("AWS/")]
    assert ours, "the dashboard shows no deployer metric"
    known = emitted()
    for metric in ours:
        assert metric[0] == namespace, metric
        assert metric[2:4] == ["service", service], metric
        assert metric[1] in known, f"{metric[1]} is on the dashboard but no code emits it"


def test_the_dashboard_covers_deploys_failures_durations_rollbacks_and_drift(
    template: dict[str, Any],
) -> None:
    shown = {m[1] for m in dashboard_metrics(template)}
    wanted = {
        DeployMetric.DEPLOY_SUCCEEDED,
        DeployMetric.DEPLOY_FAILED,
        DeployMetric.DEPLOY_DURATION,
        DeployMetric.ROLLBACKS,
        DeployMetric.DRIFT_DETECTED,
        DeployMetric.DEPLOY_CANCELLED,
        "Errors",
        "Throttles",
        "ApproximateNumberOfMessagesVisible",
    }
    assert wanted <= shown, wanted - shown


def test_every_function_and_dead_letter_queue_of_the_stack_is_on_the_dashboard(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    functions = {k for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    queues = {k for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue" and "DeadLetter" in k}
    metrics = dashboard_metrics(template)
    lambda_refs = {m[3] for m in metrics if m[0] == "AWS/Lambda"}
    sqs_refs = {m[3] for m in metrics if m[0] == "AWS/SQS"}
    for name in ("Errors", "Throttles"):
        assert {m[3] for m in metrics if m[:2] == ["AWS/Lambda", name]} == {f"REF({f})" for f in functions}
    assert lambda_refs == {f"REF({f})" for f in functions}
    assert sqs_refs == {f"REF({q}.QueueName)" for q in queues}


def test_the_dashboard_body_is_valid_json_once_names_are_filled_in(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    filled = re.sub(r"\$\{[A-Za-z0-9:.]+\}", "x", body)
    assert isinstance(json.loads(filled)["widgets"], list)
    assert Path(ROOT / "template.yaml").read_text().count("AWS::CloudWatch::Dashboard") == 1


def test_the_proxy_widgets_draw_one_line_per_release_of_the_hosts_metrics(template: dict[str, Any]) -> None:
    searches = sorted(dashboard_expressions(template).values())
    schema = f"{{{PROXY_NAMESPACE},App,Release}}"
    assert searches == sorted(
        [
            f"SEARCH('{schema} MetricName=\"{PROXY_REQUESTS}\"', 'Sum', 60)",
            f"SEARCH('{schema} MetricName=\"{PROXY_ERRORS}\"', 'Sum', 60)",
            f"SEARCH('{schema} MetricName=\"{PROXY_LATENCY}\"', 'p99', 60)",
        ]
    )
