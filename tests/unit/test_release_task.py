"""The release task's pure parts, without any AWS stand-in: the `task_ended` decision as tables,
which release owes its task, which instance runs it, what the task command carries, and the
config's bounds (hostile argv: tests/security/test_release_task_input.py)."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deployer import builders, markers
from deployer.adapters.app_state import AppStateRecord
from deployer.agent_contract import (
    PARAMETER_PATTERNS,
    RELEASE_TASK_MAX_ARGS,
    TASK_PARAMETER_PATTERNS,
    AgentSummary,
    encode_task_argv,
    parse_summary,
)
from deployer.controller import Ending, Now, decisions, rollout
from deployer.controller.types import TaskEnding
from deployer.errors import InvalidAppConfig
from deployer.metrics_names import DeployMetric
from deployer.models.config import AppConfig
from deployer.models.records import TASK_FAILED, TASK_SUCCEEDED, Release, ReleaseSource, ReleaseStatus
from deployer.models.ssm_status import SsmStatus
from deployer.verdicts import Verdict

from localcloud.aws.ssm_agent import steps
from localcloud.moto_gaps import document_parameters
from tests.conftest import WEB_CONFIG, make_release, read_template
from tests.unit.test_contracts import agent_constant
from tools import render_template

pytestmark = pytest.mark.unit

S = ReleaseStatus
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = Now(epoch=int(T0.timestamp()), at=T0)
TOKEN = "k" * 32
DEPLOYING_ONLY = frozenset({S.DEPLOYING})
MIGRATE = ["python", "manage.py", "migrate"]


def config(**overrides: Any) -> AppConfig:
    raw = {**json.loads(json.dumps(WEB_CONFIG)), "launch_template": "lt-0123456789abcdef0", **overrides}
    return AppConfig.parse(raw)


def release(n: int, status: ReleaseStatus = S.DEPLOYING, **fields: Any) -> Release:
    return make_release(n, status=status, **fields)


def state(**fields: Any) -> AppStateRecord:
    return AppStateRecord(app="web", **fields)


def summary(exit_code: int, container_exit: int | None, tail: list[str], message: str = "") -> AgentSummary:
    ok = exit_code == 0
    line = json.dumps(
        {
            "agent": "deployer",
            "app": "web",
            "release": 5,
            "outcome": "task_succeeded" if ok else "failed",
            "failure_class": "none" if ok else "task",
            "exit_code": exit_code,
            "message": message or ("exit code 0" if ok else f"it exited with code {container_exit}"),
            "container_exit": container_exit,
            "log_tail": tail,
        }
    )
    parsed = parse_summary("task| output\n" + line + "\n")
    assert parsed is not None
    return parsed


def succeeded() -> TaskEnding:
    return TaskEnding("Success", 0, summary(0, 0, ["Applying users.0001... OK"]))


def failed(code: int = 3, tail: list[str] | None = None) -> TaskEnding:
    lines = tail if tail is not None else [f"line {i}" for i in range(1, 9)]
    return TaskEnding("Failed", 9, summary(9, code, lines))


# ------------------------------------------------------------------ task_ended: succeeded
def test_a_task_that_succeeded_is_recorded_and_the_release_goes_on_under_this_decisions_claim() -> None:
    rel = release(5, replaces=4, task_command_id="c-task", task_instance="i-1", send_claim="other")
    decision = decisions.task_ended(
        state(last_release=5, lock_owner="web#5"), rel, succeeded(), [], TOKEN, NOW
    )
    # One write: release 5 stays DEPLOYING (only from DEPLOYING), the task's result on it, the
    # send claim handed to this invocation so it moves pointer and group at once
    assert [(t.release, t.status, t.allowed_from) for t in decision.transitions] == [
        (5, S.DEPLOYING, DEPLOYING_ONLY)
    ]
    fields = decision.transitions[0].fields
    assert fields == {
        "task_result": TASK_SUCCEEDED,
        "task_exit_code": 0,
        "send_claim": TOKEN,
        "send_claimed_at": NOW.epoch,
    }
    # and nothing else: the app's state, lock and desired release stay as they are
    assert decision.change is None
    assert decision.ended is None
    assert decision.creates == []


# ------------------------------------------------------------------ task_ended: failed
@pytest.mark.parametrize(
    ("source", "replaces", "desired", "clear_desired", "refused"),
    [
        (ReleaseSource.PUSH, 4, 4, False, True),
        (ReleaseSource.MANUAL, 4, 4, False, True),
        (ReleaseSource.PUSH, None, None, True, True),  # a first deploy: nothing ran before it
        (ReleaseSource.ROLLBACK, 4, 4, False, False),  # a rollback's image succeeded before
    ],
)
def test_a_failed_task_fails_the_release_and_nothing_goes_back_because_nothing_moved(
    source: ReleaseSource, replaces: int | None, desired: int | None, clear_desired: bool, refused: bool
) -> None:
    rel = release(5, source=source, replaces=replaces, task_command_id="c-task", task_instance="i-1")
    decision = decisions.task_ended(state(last_release=5, lock_owner="web#5"), rel, failed(), [], TOKEN, NOW)
    assert [(t.release, t.status, t.allowed_from) for t in decision.transitions] == [
        (5, S.FAILED, DEPLOYING_ONLY)
    ]
    assert decision.transitions[0].fields == {"task_result": TASK_FAILED, "task_exit_code": 3}
    change = decision.change
    assert change is not None
    assert change.expect_owner == "web#5"
    assert (change.desired, change.clear_desired) == (desired, clear_desired)
    # No realign: pointer, launch template and group never moved for this release
    assert change.realign is None
    assert change.refuse == (rel.digest if refused else None)
    assert change.clear_owner is True
    assert change.add_outbox == ["5:failed"]
    assert decision.counts == [(DeployMetric.DEPLOY_FAILED, 1)]
    assert decision.ended is not None
    assert (decision.ended.release, decision.ended.status, decision.ended.followed_by) == (5, S.FAILED, None)


def test_a_failed_tasks_reason_names_its_exit_code_and_its_last_lines() -> None:
    rel = release(5, replaces=4, task_command_id="c-task", task_instance="i-1")
    decision = decisions.task_ended(state(last_release=5, lock_owner="web#5"), rel, failed(3), [], TOKEN, NOW)
    reason = decision.transitions[0].reason
    assert reason.startswith("release task failed (exit code 3): it exited with code 3; last lines: ")
    assert reason.endswith("line 4 | line 5 | line 6 | line 7 | line 8")
    assert "line 3" not in reason
    assert decision.ended is not None
    assert decision.ended.reason == reason


def test_a_failed_tasks_reason_stays_bounded() -> None:
    rel = release(5, replaces=4, task_command_id="c", task_instance="i-1")
    ending = failed(1, ["x" * 190] * 15)
    decision = decisions.task_ended(state(last_release=5, lock_owner="web#5"), rel, ending, [], TOKEN, NOW)
    assert len(decision.transitions[0].reason) == decisions.TASK_REASON_MAX


def test_a_failed_task_hands_the_app_to_a_newer_pending_release() -> None:
    rel = release(5, replaces=4, task_command_id="c", task_instance="i-1")
    st = state(last_release=6, lock_owner="web#5")
    decision = decisions.task_ended(st, rel, failed(), [release(6, S.PENDING)], TOKEN, NOW)
    assert [(t.release, t.status) for t in decision.transitions] == [(5, S.FAILED), (6, S.DEPLOYING)]
    assert decision.transitions[1].fields["replaces"] == 4
    assert decision.change is not None
    assert (decision.change.owner, decision.change.desired) == ("web#6", 6)
    assert decision.ended is not None
    assert decision.ended.followed_by == 6


# ------------------------------------------------------------------ task_verdict: how it ended
@pytest.mark.parametrize(
    ("ending", "ok", "code", "reason"),
    [
        (TaskEnding("Success", 0, None), True, 0, "release task succeeded (exit code 0)"),
        (
            TaskEnding("Execution Timed Out", 124, None),
            False,
            124,
            "release task did not finish: SSM says Execution Timed Out (exit code 124)",
        ),
        (
            TaskEnding("Undeliverable", None, None),
            False,
            None,
            "release task did not finish: SSM says Undeliverable (exit code None)",
        ),
        # An agent summary that failed before the task ran (a pull): its own code and words
        (
            TaskEnding("Failed", 4, summary(4, None, ["manifest unknown"], "pull failed after 5 attempts")),
            False,
            4,
            "release task failed (exit code 4): pull failed after 5 attempts; last lines: manifest unknown",
        ),
        # SSM says Success but the agent says the task failed: the agent's word wins
        (
            TaskEnding("Success", 0, summary(9, 2, [])),
            False,
            2,
            "release task failed (exit code 2): it exited with code 2",
        ),
    ],
)
def test_how_the_task_ended_decides_its_verdict(
    ending: TaskEnding, ok: bool, code: int | None, reason: str
) -> None:
    assert decisions.task_verdict(ending) == (ok, code, reason)


# ------------------------------------------------------------------ which release owes its task
@pytest.mark.parametrize(
    ("task", "fields", "owes"),
    [
        (MIGRATE, {}, True),
        (None, {}, False),  # the app has no task
        (MIGRATE, {"skip_task": True}, False),  # a rollback not asked to run it
        (MIGRATE, {"task_result": TASK_SUCCEEDED}, False),  # recorded: never again
        (MIGRATE, {"task_result": TASK_FAILED}, False),
    ],
)
def test_a_release_owes_its_task_until_a_decision_recorded_it(
    task: list[str] | None, fields: dict[str, Any], owes: bool
) -> None:
    cfg = config(release_task=task) if task else config()
    assert rollout.runs_task(cfg, release(5, **fields)) is owes


def test_rollbacks_skip_the_task_unless_asked_and_every_other_release_runs_it() -> None:
    def record(source: ReleaseSource, **kw: Any) -> Release:
        return decisions.new_record(
            "web",
            "team/web",
            5,
            image="r/team/web@sha256:" + "a" * 64,
            digest="sha256:" + "a" * 64,
            tag="v5",
            source=source,
            reason="r",
            token=TOKEN,
            now=NOW,
            **kw,
        )

    assert record(ReleaseSource.ROLLBACK).skip_task is True
    assert record(ReleaseSource.ROLLBACK, with_task=True).skip_task is False
    assert record(ReleaseSource.PUSH).skip_task is False
    assert record(ReleaseSource.MANUAL).skip_task is False
    # and the automatic rollback a failed release gets skips it too
    failed_release = release(5, replaces=4, deploy_started_at=T0 - timedelta(minutes=1))
    target = release(4, S.SUCCEEDED)
    fleet_failed = Ending(SsmStatus.FAILED, None, None, Verdict.FAILED, "hosts failed")
    decision = decisions.end(
        state(last_release=5, lock_owner="web#5"),
        failed_release,
        fleet_failed,
        auto_rollback=True,
        pending=[],
        target=target,
        rolled_back=None,
        token=TOKEN,
        now=NOW,
    )
    (rollback,) = decision.creates
    assert (rollback.source, rollback.skip_task) == (ReleaseSource.ROLLBACK, True)


def test_the_task_runs_on_the_lowest_instance_id_of_the_groups_in_service_instances() -> None:
    assert rollout.task_instance(["i-0c", "i-0a", "i-0b"]) == "i-0a"
    assert rollout.task_instance(["i-0b", "i-0c", "i-0a"]) == "i-0a"
    assert rollout.task_instance([]) is None


# ------------------------------------------------------------------ what the task command carries
def test_the_task_command_carries_the_swaps_container_parameters_and_the_encoded_argv() -> None:
    cfg = config(release_task=MIGRATE, release_task_timeout=1200)
    rel = release(5)
    parameters = builders.task_parameters(cfg, rel)
    swap = builders.swap_parameters(cfg, rel)
    for name in builders.TASK_SHARED_PARAMETERS:
        assert parameters[name] == swap[name], name
    assert json.loads(base64.b64decode(parameters["argv"][0])) == MIGRATE
    assert parameters["taskTimeout"] == ["1200"]
    assert parameters["executionTimeout"] == ["2100"]  # the task's bound + the pull's margin
    assert set(parameters) == {*builders.TASK_SHARED_PARAMETERS, "argv", "taskTimeout", "executionTimeout"}


def test_an_app_without_a_task_has_no_task_parameters() -> None:
    with pytest.raises(InvalidAppConfig, match="no release_task"):
        builders.task_parameters(config(), release(5))


def test_the_task_comment_is_parsed_back_and_is_ours() -> None:
    comment = markers.task_comment("web", 12)
    assert comment == "deployer task web release 12"
    assert markers.parse_task_comment(comment) == ("web", 12)
    assert markers.is_ours(comment)
    assert markers.parse_release_comment(comment) is None
    assert markers.parse_task_comment(markers.release_comment("web", 12)) is None


# ------------------------------------------------------------------ config bounds
def test_the_task_config_defaults_to_none_and_600_seconds() -> None:
    cfg = config()
    assert (cfg.release_task, cfg.release_task_timeout) == (None, 600)
    assert config(release_task=MIGRATE).release_task == tuple(MIGRATE)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"release_task": []}, "release_task"),
        ({"release_task": ["ok"] * 33}, "release_task"),
        ({"release_task": ["echo", ""]}, "release_task.1"),
        ({"release_task": ["echo", "a\nb"]}, "release_task.1"),
        ({"release_task": ["echo", "caf\u00e9"]}, "release_task.1"),
        ({"release_task": ["x" * 513]}, "release_task.0"),
        ({"release_task": ["x" * 500] * 8}, "release_task"),  # too long once encoded
        ({"release_task": "python manage.py migrate"}, "release_task"),
        ({"release_task_timeout": 9}, "release_task_timeout"),
        ({"release_task_timeout": 28801}, "release_task_timeout"),
    ],
)
def test_a_bad_task_config_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidAppConfig) as raised:
        config(**overrides)
    assert field in str(raised.value)


def test_the_longest_task_config_fits_the_documents_parameter() -> None:
    cfg = config(release_task=["x" * 100] * 29, release_task_timeout=28800)
    parameters = builders.task_parameters(cfg, release(5))
    assert len(parameters["argv"][0]) <= 4096
    assert parameters["executionTimeout"] == ["29700"]
    assert encode_task_argv(cfg.release_task or ()) == parameters["argv"][0]


# ------------------------------------------------------------------ one grammar, three places
def test_the_task_documents_patterns_the_contract_and_the_agent_agree() -> None:
    # Given the TaskDocument of template.yaml and the agent's own patterns
    parameters = read_template()["Resources"]["TaskDocument"]["Properties"]["Content"]["parameters"]
    # Then every shared parameter has the swap document's pattern, the task's their own, and the
    # agent validates each with the identical pattern
    for name in builders.TASK_SHARED_PARAMETERS:
        assert parameters[name]["allowedPattern"] == PARAMETER_PATTERNS[name], name
    for name, pattern in TASK_PARAMETER_PATTERNS.items():
        assert parameters[name]["allowedPattern"] == pattern, name
    assert parameters["executionTimeout"]["allowedPattern"] == PARAMETER_PATTERNS["executionTimeout"]
    assert agent_constant("TASK_PATTERNS") == {
        "argv": TASK_PARAMETER_PATTERNS["argv"],
        "timeout": TASK_PARAMETER_PATTERNS["taskTimeout"],
    }
    assert agent_constant("TASK_MAX_ARGS") == RELEASE_TASK_MAX_ARGS
    assert set(parameters) == {*builders.TASK_SHARED_PARAMETERS, *TASK_PARAMETER_PATTERNS, "executionTimeout"}


def test_the_deployable_task_document_embeds_the_agent_byte_for_byte_within_the_budget() -> None:
    # Given template.yaml's TaskDocument holds the placeholder, and the rendered template
    source = render_template.document(render_template.SOURCE.read_text(), "TaskDocument")
    assert source is not None
    assert source["mainSteps"][0]["inputs"]["runCommand"].count(render_template.PLACEHOLDER) == 1
    content = render_template.task_document(render_template.ensure_built().read_text())
    # Then its runCommand writes exactly host/agent.py, runs `agent.py task`, and it fits SSM's size
    run_command = content["mainSteps"][0]["inputs"]["runCommand"]
    assert render_template.PLACEHOLDER not in run_command
    assert render_template.embedded_agent(run_command) == render_template.AGENT.read_text()
    assert "exec python3 /opt/deployer/agent.py task " in run_command[-1]
    assert max(render_template.document_sizes(content).values()) < render_template.DOCUMENT_BUDGET


def test_the_agent_keeps_the_newest_task_records_of_an_app(tmp_path: Path) -> None:
    # Given the agent (imported, nothing run) with its state dir in tmp_path
    spec = importlib.util.spec_from_file_location("agent_records", render_template.AGENT)
    assert spec
    assert spec.loader
    agent = importlib.util.module_from_spec(spec)
    sys.modules["agent_records"] = agent
    spec.loader.exec_module(agent)
    config = {**agent.HOST_DEFAULTS, "state_dir": str(tmp_path)}
    image = "r.example/web@sha256:" + "a" * 64
    # When it records the tasks of releases 1 to 52
    for number in range(1, 53):
        args = agent.checked_args(
            [
                "task",
                "--app=web",
                f"--image={image}",
                f"--release={number}",
                f"--argv={encode_task_argv(['x'])}",
                "--timeout=60",
            ]
        )
        runner = agent.TaskAgent(config, args)
        runner.write_record({"release": number, "exit_code": 0, "log_tail": []})
    # Then the newest 50 remain, each readable only by its owner
    kept = sorted(int(p.stem) for p in (tmp_path / "web" / "tasks").glob("*.json"))
    assert kept == list(range(3, 53))
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "web" / "tasks").glob("*.json")} == {0o600}


def test_the_local_clouds_ssm_stand_in_renders_the_task_document_with_the_control_planes_parameters() -> None:
    # Given the deployable TaskDocument and the parameters the control plane sends
    content = render_template.task_document(render_template.ensure_built().read_text())
    cfg = config(release_task=MIGRATE, release_task_timeout=120)
    parameters = builders.task_parameters(cfg, release(5))
    # When the SSM stand-in (localcloud.aws.ssm_agent) checks and renders them as SSM does
    values = document_parameters(content, parameters)
    ((name, script, timeout),) = steps(content, values)
    # Then one step runs the agent's task mode with exactly these values, stopped at 120 + 900 s
    assert (name, timeout) == ("task", 1020)
    last = script.strip().splitlines()[-1]
    assert last.startswith("exec python3 /opt/deployer/agent.py task --app='web' ")
    assert f"--argv='{parameters['argv'][0]}' --timeout='120'" in last
    assert f"--image='{parameters['image'][0]}'" in last
