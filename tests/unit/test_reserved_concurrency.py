"""Reserved concurrency is a stack parameter: on by default, off for accounts whose concurrency
quota cannot spare 133 (README, Deploy to AWS)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam.test_least_privilege import deployed_template

pytestmark = pytest.mark.unit


def _condition(template: dict[str, Any], name: str, parameters: dict[str, str]) -> bool:
    test = template["Conditions"][name]
    left, right = test["Fn::Equals"]
    value = parameters[left["Ref"]] if isinstance(left, dict) else left
    return bool(value == right)


def _resolve(value: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """The value CloudFormation sets with `parameters` (None for AWS::NoValue)."""
    if isinstance(value, dict) and "Fn::If" in value:
        condition, when_true, when_false = value["Fn::If"]
        chosen = when_true if _condition(template, condition, parameters) else when_false
        return _resolve(chosen, template, parameters)
    if value == {"Ref": "AWS::NoValue"}:
        return None
    return value


def _reserved(parameters: dict[str, str]) -> dict[str, Any]:
    template = deployed_template()
    defaults = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    chosen = {**defaults, **parameters}
    return {
        lid: _resolve(r["Properties"].get("ReservedConcurrentExecutions"), template, chosen)
        for lid, r in template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function"
    }


def test_every_function_reserves_its_concurrency_by_default() -> None:
    # Given the deployed template with its default parameters
    # Then each function reserves what docs/architecture.md lists, 33 in all
    reserved = _reserved({})
    assert reserved == {
        "OnImagePushFunction": 10,
        "OnCommandStatusFunction": 10,
        "OnInstanceLaunchFunction": 10,
        "ReconcilerFunction": 1,
        "RollbackFunction": 2,
    }


def test_reserved_concurrency_off_leaves_every_function_unreserved() -> None:
    # Given ReservedConcurrency=off (an account whose quota is below 133)
    reserved = _reserved({"ReservedConcurrency": "off"})

    # Then no function sets ReservedConcurrentExecutions, and only on/off are accepted
    assert reserved
    assert set(reserved.values()) == {None}
    assert deployed_template()["Parameters"]["ReservedConcurrency"]["AllowedValues"] == ["on", "off"]
