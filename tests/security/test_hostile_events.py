"""Hostile events: every handler's input fuzzed, in moto.

Cases come from two sources: the fields each handler's pydantic models declare (JSON schema, by
alias), set to hostile JSON values; and mutations of AWS's documented samples in events/ (a
field deleted, retyped or spliced with an attack). The handler's own model says whether a case
is invalid; every invalid case must end the way the handlers promise: no unhandled exception,
nothing changed in DynamoDB, SSM (parameters, commands) or the launch template, one warning log
line naming the rejection, and the BadInput metric.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from deployer.entry.events import _CommandEvents
from deployer.errors import DeployerError, InvalidEvent
from deployer.models.events import EcrImageAction
from deployer.models.lifecycle_events import InstanceLaunchEvent, OperationRequest, parse_operation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from functions.on_command_status.app import handler as on_command_status
from functions.on_image_push.app import handler as on_image_push
from functions.on_instance_launch.app import handler as on_instance_launch
from functions.reconciler.app import handler as reconciler
from functions.rollback.app import handler as rollback
from tests.conftest import REGION, read_event
from tests.lifecycle.iam_scenarios import FakeContext, lifecycle

pytestmark = pytest.mark.unit

CASES = 60
FUZZ = settings(max_examples=CASES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ATTACKS = ["'; reboot; '", "$(id)", "`id`", "\n", "\x00", "../../etc", "{{ app }}", "A" * 3000,
           "sha256:" + "g" * 64, "-1", "1e309", "\u202e", "null"]
HOSTILE_CASES: Counter[str] = Counter()

_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=40), st.sampled_from(ATTACKS))
json_values = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=8)


def _schema_fields(schema: dict[str, Any]) -> list[str]:
    """Every property name a model's JSON schema declares (nested models included)."""
    names: set[str] = set()
    for part in [schema, *schema.get("$defs", {}).values()]:
        names |= set(part.get("properties", {}))
    return sorted(names)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at] if at else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*at, index))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _delete(doc: Any, path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        doc = doc[key]
    del doc[path[-1]]


@st.composite
def hostile_events(draw: st.DrawFn, samples: list[str], fields: list[str]) -> Any:
    """A documented sample, mutated; or a field of the models set to a hostile value; or junk."""
    how = draw(st.sampled_from(["mutate", "mutate", "field", "junk"]))
    if how == "junk":
        return draw(json_values)
    event = copy.deepcopy(read_event(draw(st.sampled_from(samples))))
    if how == "field":
        nested = isinstance(event.get("detail"), dict) and draw(st.booleans())
        target: Any = event["detail"] if nested else event
        target[draw(st.sampled_from(fields))] = draw(json_values)
        return event
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(event)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "replace", "splice"]))
        current: Any = event
        for key in path:
            current = current[key]
        if op == "delete" and not isinstance(path[-1], int):
            _delete(event, path)
        elif op == "splice" and isinstance(current, str):
            _set(event, path, current[: len(current) // 2] + draw(st.sampled_from(ATTACKS)))
        else:
            _set(event, path, draw(json_values))
    return event


# ------------------------------------------------------------------ the world and what we observe
_CLIENTS: dict[str, Any] = {}


def _state() -> dict[str, Any]:
    """Everything a handler could change: every table, the pointers, commands, template versions."""
    ddb, ssm, ec2 = (_CLIENTS[name] for name in ("dynamodb", "ssm", "ec2"))
    tables = {name: sorted(json.dumps(i, sort_keys=True) for i in ddb.scan(TableName=name)["Items"])
              for name in ddb.list_tables()["TableNames"]}
    parameters = ssm.get_parameters_by_path(Path="/", Recursive=True).get("Parameters", [])
    templates = [(t["LaunchTemplateId"], t["LatestVersionNumber"])
                 for t in ec2.describe_launch_templates()["LaunchTemplates"]]
    return {"tables": tables, "parameters": sorted((p["Name"], p["Value"]) for p in parameters),
            "commands": len(ssm.list_commands().get("Commands", [])), "templates": templates}


def _output(capsys: pytest.CaptureFixture[str],
            caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """(warning-or-worse log messages, metric names) of the invocation."""
    logs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    metrics = []
    for line in capsys.readouterr().out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "_aws" in record:
            metrics += [m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    return logs, metrics


def _is_valid(check: Callable[[Any], Any], event: Any) -> bool:
    try:
        check(event)
    except (ValidationError, InvalidEvent, ValueError, TypeError):
        return False
    return True


def _fuzz_case(name: str, handler: Callable[..., Any], check: Callable[[Any], Any], event: Any,
               capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *,
               raises_on_invalid: bool = False) -> None:
    HOSTILE_CASES[name] += 1
    capsys.readouterr()
    caplog.clear()
    invalid = not _is_valid(check, event)
    before = _state() if invalid else None
    # When the handler gets it
    try:
        answer = handler(copy.deepcopy(event), FakeContext())
    except InvalidEvent as exc:
        # (an operator's direct invocation answers bad input with the error, naming the field)
        answer = {"status": "rejected" if raises_on_invalid and invalid else "escaped", "error": str(exc)}
    except DeployerError:
        assert not invalid  # a valid request the core refused (unknown app, nothing to roll back)
        answer = {"status": "refused"}
    # Then nothing escaped; an invalid case is rejected, changes nothing, logs once and counts
    logs, metrics = _output(capsys, caplog)
    assert answer["status"] != "escaped", answer
    if invalid:
        HOSTILE_CASES[f"{name}: invalid, rejected"] += 1
        assert answer["status"] == "rejected" or all(
            r["status"] == "rejected" for r in answer.get("results", [answer])), answer
        assert _state() == before
        assert len(logs) == 1, logs
        assert "rejected" in logs[0], logs
        assert metrics.count("BadInput") == 1, metrics
    else:
        HOSTILE_CASES[f"{name}: valid"] += 1


@pytest.fixture
def world(lambda_env: Any, deps: Any, registered_app: Any, aws: Any) -> Any:
    """Tables, a registered app and its fleet in moto, and the lifecycle wiring."""
    holder = type("W", (), {"config": registered_app, "gaps": aws})()
    # clients made once per test (inside moto), not once per case: creating one costs more than a call
    _CLIENTS.update({name: boto3.client(name, region_name=REGION) for name in ("dynamodb", "ssm", "ec2")})
    with lifecycle(holder, {"LAUNCH_RECHECK_QUEUE_URL": boto3.client("sqs", region_name=REGION)
                             .create_queue(QueueName="LaunchRecheckQueue")["QueueUrl"]}):
        yield holder


PUSH_FIELDS = _schema_fields(EcrImageAction.model_json_schema(by_alias=True))
STATUS_FIELDS = _schema_fields(_CommandEvents.model_json_schema(by_alias=True))
LAUNCH_FIELDS = _schema_fields(InstanceLaunchEvent.model_json_schema(by_alias=True))
OPERATION_FIELDS = _schema_fields(TypeAdapter(OperationRequest).json_schema(by_alias=True))


@FUZZ
@given(event=hostile_events(["ecr_image_push", "ecr_image_push_untagged"], PUSH_FIELDS))
def test_on_image_push_survives_hostile_events(world: Any, capsys: Any, caplog: Any, event: Any) -> None:
    from deployer.models.events import parse_push_event  # noqa: PLC0415

    _fuzz_case("on-image-push", on_image_push, parse_push_event, event, capsys, caplog)


@FUZZ
@given(event=hostile_events(["ssm_command_status_success", "ssm_command_status_failed",
                             "ssm_command_invocation_success", "ssm_command_invocation_failed"],
                            STATUS_FIELDS))
def test_on_command_status_survives_hostile_events(world: Any, capsys: Any, caplog: Any, event: Any) -> None:
    _fuzz_case("on-command-status", on_command_status,
               lambda e: _CommandEvents.model_validate({"event": e}), event, capsys, caplog)


@FUZZ
@given(event=hostile_events(["asg_instance_launch"], LAUNCH_FIELDS))
def test_on_instance_launch_survives_hostile_events(world: Any, capsys: Any, caplog: Any, event: Any) -> None:
    def check(e: Any) -> Any:
        if isinstance(e, dict) and isinstance(e.get("Records"), list):
            raise ValueError("re-check batches are fuzzed below")
        return InstanceLaunchEvent.model_validate(e)

    _fuzz_case("on-instance-launch", on_instance_launch, check, event, capsys, caplog)


@FUZZ
@given(body=st.one_of(json_values.map(json.dumps), st.text(max_size=60), st.sampled_from(ATTACKS)))
def test_on_instance_launch_survives_hostile_recheck_messages(
        world: Any, capsys: Any, caplog: Any, body: str) -> None:
    from deployer import launch  # noqa: PLC0415

    def check(e: Any) -> Any:
        recheck = launch.parse_recheck(e["Records"][0]["body"])
        if not isinstance(recheck, launch.SwapHeartbeat):
            InstanceLaunchEvent.model_validate(recheck.event)
        return recheck

    _fuzz_case("launch re-check", on_instance_launch, check, {"Records": [{"body": body}]}, capsys, caplog)


@FUZZ
@given(event=hostile_events(["rollback", "rollback_to_tag", "promote", "pause", "resume"], OPERATION_FIELDS))
def test_rollback_survives_hostile_requests(world: Any, capsys: Any, caplog: Any, event: Any) -> None:
    _fuzz_case("rollback", rollback, parse_operation, event, capsys, caplog, raises_on_invalid=True)


@FUZZ
@given(event=json_values)
def test_the_reconciler_ignores_whatever_event_it_is_given(world: Any, event: Any) -> None:
    # The schedule's event carries nothing the reconciler reads: any payload is the same tick.
    HOSTILE_CASES["reconciler"] += 1
    answer = reconciler(event, FakeContext())
    assert answer["status"] == "ok"


def test_every_fuzzer_ran_its_hostile_cases() -> None:
    print("\nHOSTILE EVENTS", dict(sorted(HOSTILE_CASES.items())))
    names = ["on-image-push", "on-command-status", "on-instance-launch", "launch re-check", "rollback",
             "reconciler"]
    if not all(HOSTILE_CASES[n] for n in names):
        pytest.skip("run with the whole module to count the hostile cases")
    assert all(HOSTILE_CASES[n] >= CASES for n in names)
    assert all(HOSTILE_CASES[f"{n}: invalid, rejected"] for n in names if n != "reconciler")
