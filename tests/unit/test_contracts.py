"""Contracts that tie the control plane to the template, the agent and the docs."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from deployer import builders
from deployer.agent_contract import (
    AGENT_FLAGS,
    DOCKER_OPTION_NAMES,
    EXIT_CODE_BY_CLASS,
    PARAMETER_PATTERNS,
    FailureClass,
    parse_summary,
)
from deployer.errors import InvalidAppConfig, InvalidSettings, UserDataTooLarge
from deployer.models.config import AppConfig
from deployer.models.records import Release
from deployer.settings import ENV_NAMES, Settings
from moto.server import ThreadedMotoServer

from localcloud.hosts.sandbox import free_port
from tests.conftest import WEB_CONFIG, make_release
from tools import render_template

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
        "executionTimeout": ["300"],
    }
    assert all(re.fullmatch(PARAMETER_PATTERNS[k], v[0]) for k, v in params.items())


def test_user_data_reads_the_agent_from_the_swap_document_and_boots_the_release(tmp_path: Path) -> None:
    # Given the deployable swap document in SSM (moto behind the real AWS CLI, as on an instance)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=endpoint,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        document = render_template.swap_document(render_template.ensure_built().read_text())
        ssm.create_document(Name="deployer-swap", Content=yaml.safe_dump(document), DocumentType="Command",
                            DocumentFormat="YAML")
        # When user data for release 7 runs up to the agent's boot
        script = builders.user_data(config(), release(), "deployer-swap", POINTER, "us-east-1")
        lines = script.splitlines()
        proc = subprocess.run(
            ["sh", "-c", "\n".join(lines[:-1]).replace("/opt/deployer", str(tmp_path))],
            env={"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "HOME": str(tmp_path)},
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        server.stop()
    # Then the host holds exactly host/agent.py, and boots the baked release with the pointer first
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "agent.py").read_bytes() == (ROOT / "host" / "agent.py").read_bytes()
    assert DIGEST in lines[1]
    assert lines[-1].startswith("python3 /opt/deployer/agent.py boot --app=web --image=")
    assert f"@{DIGEST}" in lines[-1]
    assert "--release=7 " in lines[-1]
    assert lines[-1].endswith("--pointer-parameter=/deployer/web/release --region=us-east-1 "
                              ">>/var/log/deployer-boot.log 2>&1")
    # and it fits EC2's 16 KB with room to spare, whatever the agent's size
    assert len(script.encode()) < 4096


def test_the_user_data_and_the_document_agree_on_the_agent_marker() -> None:
    assert builders.AGENT_MARKER == render_template.DELIMITER


@pytest.mark.parametrize(
    ("document", "pointer", "region"),
    [("bad name!", "/deployer/web/release", "us-east-1"), ("deployer-swap", "no-slash", "us-east-1"),
     ("deployer-swap", "/deployer/web/release", "us-east-1; reboot")],
)
def test_user_data_refuses_names_that_could_break_the_script(
    document: str, pointer: str, region: str
) -> None:
    with pytest.raises(InvalidAppConfig):
        builders.user_data(config(), release(), document, pointer, region)


def test_user_data_that_would_exceed_16_kb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a limit smaller than any boot script
    monkeypatch.setattr(builders, "USER_DATA_LIMIT", 512)
    # When user data is built, then it is refused instead of being cut by EC2
    with pytest.raises(UserDataTooLarge):
        builders.user_data(config(), release(), "deployer-swap", "/deployer/web/release", "us-east-1")


def test_an_agent_summary_is_parsed_and_garbage_yields_none() -> None:
    line = (
        '{"agent":"deployer","version":1,"host":"h","app":"web","release":7,"digest":"' + DIGEST + '",'
        '"outcome":"failed","failure_class":"health","exit_code":6,"message":"health gate failed",'
        '"previous_release":6,"timings":{"total":1.5},"pull_attempts":1,"container_exit":null,"log_tail":["x"]}'
    )
    summary = parse_summary("some log\n" + line + "\n")
    assert summary is not None
    assert (summary.failure_class, summary.exit_code, summary.serving) == (FailureClass.HEALTH, 6, False)
    assert parse_summary(line[:-40]) is None
    assert parse_summary("") is None
    assert parse_summary('{"agent":"other"}') is None


def test_the_template_gives_functions_exactly_the_settings_variables(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    ours = {name for name in ENV_NAMES.values() if name != "AWS_REGION"}
    assert ours <= set(variables)
    assert {v for v in variables if not v.startswith("POWERTOOLS_")} == ours


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
