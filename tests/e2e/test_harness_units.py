"""The local cloud's pure pieces: document rendering, SendCommand parameter checks, the
user-data interpreter."""

from __future__ import annotations

import pytest

from localcloud.fleet import interpreter
from localcloud.moto_gaps import document_parameters
from localcloud.ssm_agent import render, steps

pytestmark = pytest.mark.unit

DOC = {
    "schemaVersion": "2.2",
    "parameters": {
        "app": {"type": "String", "allowedPattern": "^[a-z]+$"},
        "retain": {"type": "String", "default": "3", "allowedPattern": "^[0-9]+$"},
        "executionTimeout": {"type": "String", "default": "600"},
    },
    "mainSteps": [
        {
            "action": "aws:runShellScript",
            "name": "swap",
            "inputs": {
                "timeoutSeconds": "{{ executionTimeout }}",
                "runCommand": ["echo '{{app}}' {{ retain }}"],
            },
        }
    ],
}


def test_placeholders_are_substituted_textually_and_unknown_ones_left_alone():
    assert render("a {{ app }} b {{app}} c {{ other }}", {"app": "web"}) == "a web b web c {{ other }}"


def test_steps_render_the_script_and_the_step_timeout_with_defaults_filled():
    values = document_parameters(DOC, {"app": ["web"]})
    assert values == {"app": "web", "retain": "3", "executionTimeout": "600"}
    assert steps(DOC, values) == [("swap", "echo 'web' 3\n", 600)]


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"app": ["web;reboot"]}, "fails allowedPattern"),
        ({}, "missing required parameter app"),
        ({"app": ["web"], "evil": ["x"]}, "unknown parameter"),
        ({"app": ["a", "b"]}, "one value"),
    ],
)
def test_send_command_parameters_are_refused_like_ssm_does(given, problem):
    with pytest.raises(ValueError, match=problem):
        document_parameters(DOC, given)


def test_user_data_runs_with_the_interpreter_of_its_shebang():
    assert interpreter("#!/bin/sh\nset -eu\n") == "/bin/sh"
    assert interpreter("#!/usr/bin/env bash\n") == "bash"
    assert interpreter("echo no shebang\n") == "/bin/sh"
