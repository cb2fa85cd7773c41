"""Hostile release-task argv, through the whole path it takes: the app config model → the task
document's parameters (checked against the deployable TaskDocument's allowedPattern, as SSM does)
→ the agent's own decoding and validation (host/agent.py, imported, never run against docker) →
the `docker run` argv the agent builds. An argument is data from end to end: it reaches docker
as exactly one argv element after the image, never as a docker flag, never through a shell."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from deployer import builders
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import WEB_CONFIG, make_release, read_template

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CASES = 300
PROPERTY = settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ATTACKS = [
    "'",
    '"',
    "$(reboot)",
    "`id`",
    "; rm -rf /",
    "&& curl x | sh",
    "\n--privileged",
    "--privileged",
    "--network=host",
    "-v=/:/host",
    "--entrypoint=/bin/sh",
    "{{ app }}",
    "\x00",
    "\r",
    "\u2028",
    "é",
    "$HOME",
    "*",
    "~root",
    "\\",
    "\t",
    " ",
]
DOCUMENT = read_template()["Resources"]["TaskDocument"]["Properties"]["Content"]["parameters"]
OUTCOMES: Counter[str] = Counter()


def _load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("task_agent_under_test", ROOT / "host" / "agent.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["task_agent_under_test"] = module
    spec.loader.exec_module(module)
    return module


AGENT = _load_agent()
HOST_CONFIG: dict[str, Any] = {**AGENT.HOST_DEFAULTS, "state_dir": "/nonexistent/deployer-test"}

argument = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ATTACKS),
    st.builds(lambda a, b: a + b, st.sampled_from(ATTACKS), st.text(max_size=10)),
    st.just("migrate"),
)
argvs = st.one_of(st.lists(argument, max_size=6), st.text(max_size=20), st.integers())


def _config(task: Any) -> AppConfig | str:
    doc = {
        **json.loads(json.dumps(WEB_CONFIG)),
        "launch_template": "lt-0123456789abcdef0",
        "release_task": task,
    }
    try:
        return AppConfig.parse(doc)
    except InvalidAppConfig as exc:
        refusal = str(exc)
    # A refusal names the field
    assert "release_task" in refusal, refusal
    return "refused by the app config model"


@PROPERTY
@given(argvs)
@example(["sh", "-c", "echo $(id); rm -rf / && reboot"])
@example(["--privileged", "--entrypoint=/bin/sh"])
@example(["python", "manage.py", "migrate"])
def test_a_task_argv_reaches_docker_as_data_after_the_image_or_not_at_all(task: Any) -> None:
    config = _config(task)
    if isinstance(config, str):
        OUTCOMES[config] += 1
        return
    assert config.release_task is not None
    # Then SSM's allowedPattern accepts every parameter the control plane sends
    parameters = builders.task_parameters(config, make_release(7))
    for name, values in parameters.items():
        assert re.fullmatch(DOCUMENT[name]["allowedPattern"], values[0]), name
    # and the agent validates the same values and decodes exactly the configured argv
    flags = {
        "--app": "app",
        "--image": "image",
        "--release": "release",
        "--env-file": "envFile",
        "--docker-options": "dockerOptions",
        "--log-driver": "logDriver",
        "--log-options": "logOptions",
        "--registry-login": "registryLogin",
        "--release-config": "releaseConfig",
        "--argv": "argv",
        "--timeout": "taskTimeout",
    }
    args = AGENT.checked_args(["task", *(f"{flag}={parameters[name][0]}" for flag, name in flags.items())])
    agent = AGENT.TaskAgent(HOST_CONFIG, args)
    assert agent.argv == list(config.release_task)
    # and the docker argv holds each argument as one element after the image, nothing else after it
    docker = agent.task_run_args("h-web-task-7")
    image_at = docker.index(parameters["image"][0])
    assert docker[image_at + 1 :] == list(config.release_task)
    assert "--privileged" not in docker[:image_at]
    assert not any(part.startswith("--entrypoint") for part in docker[:image_at])
    OUTCOMES["accepted, inert"] += 1


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(lambda raw: base64.b64encode(raw).decode(), st.binary(max_size=60)),
        st.builds(
            lambda v: base64.b64encode(json.dumps(v).encode()).decode(),
            st.one_of(
                st.lists(argument, max_size=4),
                st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
                st.integers(),
                st.lists(st.integers(), max_size=3),
            ),
        ),
    )
)
def test_the_agent_refuses_an_argv_value_that_is_not_a_list_of_printable_strings(value: str) -> None:
    args = [
        "task",
        "--app=web",
        f"--image=r.example/web@sha256:{'a' * 64}",
        "--release=7",
        f"--argv={value}",
        "--timeout=600",
    ]
    try:
        parsed = AGENT.checked_args(args)
    except AGENT.Failure as failure:
        refused = failure.failure_class
    else:
        refused = None
    if refused is not None:
        assert refused == "input"
        OUTCOMES["refused by the agent"] += 1
        return
    argv = AGENT.decode_task_argv(parsed.argv)
    assert 1 <= len(argv) <= 32
    assert all(isinstance(a, str) and re.fullmatch(r"[\x20-\x7e]{1,512}", a) for a in argv)
    OUTCOMES["accepted by the agent"] += 1


def test_zz_each_property_ran_cases_that_were_accepted_and_refused() -> None:
    print("\nHOSTILE_TASK_CASES", json.dumps(dict(OUTCOMES), sort_keys=True))
    assert OUTCOMES["refused by the app config model"] > 0
    assert OUTCOMES["accepted, inert"] > 0
    assert OUTCOMES["refused by the agent"] > 0
    assert OUTCOMES["accepted by the agent"] > 0
