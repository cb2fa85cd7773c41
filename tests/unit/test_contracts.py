"""Contracts that tie the control plane to the template, the agent and the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from deployer import builders
from deployer.agent_contract import (
    AGENT_FLAGS,
    DOCKER_OPTION_NAMES,
    EXIT_CODE_BY_CLASS,
    PARAMETER_PATTERNS,
)
from deployer.errors import InvalidAppConfig, InvalidSettings
from deployer.models.config import AppConfig
from deployer.models.records import Release
from deployer.settings import ENV_NAMES, Settings

from tests.conftest import WEB_CONFIG, make_release

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
POINTER = "/deployer/web/release"
IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/team/web@{DIGEST}"


def config(**changes: Any) -> AppConfig:
    return AppConfig.parse({**WEB_CONFIG, "launch_template": "lt-0123456789abcdef0", **changes})


def release(number: int = 7) -> Release:
    return make_release(number, image=IMAGE, digest=DIGEST, tag="v1")


def agent_module() -> ast.Module:
    return ast.parse((ROOT / "host" / "agent.py").read_text())


def agent_constant(name: str) -> Any:
    for node in agent_module().body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"host/agent.py defines no {name}")


def test_exit_codes_match_the_agent_and_the_docs() -> None:
    # Given the exit-code table of docs/architecture.md and the agent's EXIT_CODES
    doc = (ROOT / "docs" / "architecture.md").read_text()
    documented = {m[1]: int(m[0]) for m in re.findall(r"^\| (\d) \| (\w+) \|", doc, flags=re.M)}

    # When compared with the control plane's contract
    ours = {cls.value: int(code) for cls, code in EXIT_CODE_BY_CLASS.items()}

    # Then all three agree
    assert ours == documented
    assert ours == agent_constant("EXIT_CODES")


def test_docker_option_allow_list_matches_the_agent() -> None:
    assert list(DOCKER_OPTION_NAMES) == list(agent_constant("DOCKER_OPTION_NAMES"))


def test_swap_document_parameters_and_patterns_come_from_the_contract(template: dict[str, Any]) -> None:
    # Given the swap document of the deployable template
    content = template["Resources"]["SwapDocument"]["Properties"]["Content"]
    params = content["parameters"]

    # Then it declares exactly the contract's parameters, each with the contract's pattern
    assert {name: p["allowedPattern"] for name, p in params.items()} == PARAMETER_PATTERNS
    assert all(p["type"] == "String" for p in params.values())
    # and its script ends by running the agent with every flag
    script = content["mainSteps"][0]["inputs"]["runCommand"]
    assert script[-1].startswith("exec python3 /opt/deployer/agent.py swap ")
    swap_line = " ".join(script)
    for name, flag in AGENT_FLAGS.items():
        assert f"{flag}='{{{{ {name} }}}}'" in swap_line


def test_no_parameter_pattern_admits_a_shell_metacharacter() -> None:
    for name, pattern in PARAMETER_PATTERNS.items():
        for bad in ["'", '"', "$", "`", ";", "&", "|", "<", ">", "\n", "\\"]:
            assert not re.fullmatch(pattern, f"a{bad}b"), (name, bad)


def test_swap_parameters_are_exact() -> None:
    # Given the web app config and release 7
    # When the swap parameters are built
    params = builders.swap_parameters(config(), release())

    # Then they are exactly these, each matching its pattern
    assert params == {
        "app": ["web"],
        "image": [IMAGE],
        "release": ["7"],
        "containerPort": ["8080"],
        "healthPath": ["/health"],
        "healthTimeout": ["30"],
        "envFile": [""],
        "dockerOptions": ["--memory=256m --pids-limit=200"],
        "logDriver": ["json-file"],
        "logOptions": ["max-file=3,max-size=10m"],
        "retain": ["3"],
        "registryLogin": ["ecr"],
        "releaseConfig": [""],
        "executionTimeout": ["300"],
    }
    assert all(re.fullmatch(PARAMETER_PATTERNS[k], v[0]) for k, v in params.items())


def test_only_a_stage_before_the_last_asks_the_host_to_keep_a_standby() -> None:
    # Given the web app config and release 7
    # When the swap parameters are built for a canary stage, and for any other command
    stage = builders.swap_parameters(config(), release(), keep_standby=True)
    other = builders.swap_parameters(config(), release())

    # Then only the stage's carry keepStandby "true"; the rest are the same
    assert stage.pop("keepStandby") == ["true"]
    assert "keepStandby" not in other
    assert stage == other
    # and the agent flags of a boot line (user data) leave it to the agent's default
    assert not any(a.startswith("--keep-standby") for a in builders.agent_arguments(other))
    assert "--keep-standby=true" in builders.agent_arguments(builders.swap_parameters(
        config(), release(), keep_standby=True))


def test_a_release_image_outside_the_documents_grammar_is_refused_naming_it() -> None:
    with pytest.raises(InvalidAppConfig) as refused:
        builders.swap_parameters(config(), make_release(7, image="Team/Web:latest"))
    assert str(refused.value).startswith("swap parameter image='Team/Web:latest' does not match ")


def test_the_template_gives_functions_exactly_the_settings_variables(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    # The launch function alone has a delay queue; every other variable is every function's.
    ours = {name for name in ENV_NAMES.values() if name not in {"AWS_REGION", "LAUNCH_RECHECK_QUEUE_URL"}}
    assert {v for v in variables if not v.startswith("POWERTOOLS_")} == ours
    own = {
        name
        for name, resource in template["Resources"].items()
        if "LAUNCH_RECHECK_QUEUE_URL"
        in resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
    }
    assert own == {"OnInstanceLaunchFunction"}


def test_settings_name_every_bad_variable() -> None:
    env = {
        "APPS_TABLE": "a",
        "APP_STATE_TABLE": "AppStateTable",
        "RELEASES_TABLE": "ReleasesTable",
        "HOST_OUTCOMES_TABLE": "HostOutcomesTable",
        "IDEMPOTENCY_TABLE": "IdempotencyTable",
        "SWAP_DOCUMENT_NAME": "SwapDocument",
        "COMMAND_LOG_GROUP": "/deployer/swap",
        "PARAMETER_PREFIX": "no-leading-slash",
    }
    with pytest.raises(InvalidSettings) as err:
        Settings.from_env(env)
    assert "APPS_TABLE" in str(err.value)
    assert "PARAMETER_PREFIX" in str(err.value)
    ok = Settings.from_env({**env, "APPS_TABLE": "AppsTable", "PARAMETER_PREFIX": "/deployer"})
    assert ok.pointer_parameter("web") == "/deployer/web/release"


def test_the_template_keeps_release_history_recoverable_and_idempotency_records_expiring(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    releases = resources["ReleasesTable"]["Properties"]
    assert releases["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    idempotency = resources["IdempotencyTable"]["Properties"]
    assert idempotency["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_the_push_rule_matches_successful_pushes_with_retries_and_a_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    rule = template["Resources"]["OnImagePushFunction"]["Properties"]["Events"]["ImagePushed"]["Properties"]
    assert rule["Pattern"] == {
        "source": ["aws.ecr"],
        "detail-type": ["ECR Image Action"],
        "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"]},
    }
    assert rule["RetryPolicy"]["MaximumEventAgeInSeconds"] == 86400
    assert rule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["OnImagePushDeadLetterQueue", "Arn"]}}


def test_every_function_has_a_log_group_with_retention(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    assert functions
    for name, function in functions.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
