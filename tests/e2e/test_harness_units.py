"""The local cloud's pure pieces: document rendering, SendCommand parameter checks, the
template's intrinsic functions, the user-data interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcloud.fleet import interpreter
from localcloud.moto_gaps import document_parameters
from localcloud.ssm_agent import render, steps
from localcloud.template import Template, TemplateError

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


def test_the_template_resolves_refs_subs_and_attributes(tmp_path: Path):
    # Given a small template with parameters, a condition and references between resources
    (tmp_path / "t.yaml").write_text(
        "Parameters:\n  Prefix: {Type: String, Default: /p}\n  Group: {Type: String, Default: ''}\n"
        "Conditions:\n  HasGroup: !Not [!Equals [!Ref Group, '']]\n"
        "Resources:\n"
        "  Table: {Type: AWS::DynamoDB::Table, Properties: {KeySchema: [], AttributeDefinitions: []}}\n"
        "  Hook: {Type: AWS::AutoScaling::LifecycleHook, Condition: HasGroup, Properties: {}}\n"
        "  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: f\n"
        "      Environment:\n        Variables:\n          T: !Ref Table\n"
        "          A: !GetAtt Table.Arn\n          S: !Sub '${Prefix}/x/${AWS::Region}'\n"
        "          N: !If [HasGroup, yes, !Ref AWS::NoValue]\n"
    )
    # When it is read
    tpl = Template(tmp_path / "t.yaml", stack="st")
    env = tpl.functions()["Fn"].environment
    # Then names are deterministic and every intrinsic is resolved; the inactive hook is absent
    assert env == {
        "T": "st-Table",
        "A": "arn:aws:dynamodb:us-east-1:123456789012:table/st-Table",
        "S": "/p/x/us-east-1",
    }
    assert "Hook" not in tpl.of_type("AWS::AutoScaling::LifecycleHook")


def test_an_unknown_reference_is_a_clear_error(tmp_path: Path):
    (tmp_path / "t.yaml").write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      Environment: {Variables: {X: !Ref Nope}}\n"
    )
    with pytest.raises(TemplateError, match="!Ref Nope: no such parameter or resource"):
        Template(tmp_path / "t.yaml").functions()
