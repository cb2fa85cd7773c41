"""The local cloud's pure pieces: document rendering, SendCommand parameter checks, the
user-data interpreter."""

from __future__ import annotations

import subprocess

import pytest

from localcloud.aws.fleet import boot_scripts, interpreter
from localcloud.aws.push_events import tagged_manifest_pushes
from localcloud.aws.ssm_agent import render, steps
from localcloud.moto_gaps import document_parameters
from localcloud.stories.playground import env_file_text, read_env

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


def test_only_tagged_manifest_pushes_become_ecr_push_events():
    # Given a registry notification with a layer push, a tagged and an untagged manifest push, a pull
    manifest = "application/vnd.docker.distribution.manifest.v2+json"
    envelope = {
        "events": [
            {"action": "push", "target": {"mediaType": "application/octet-stream", "repository": "web",
                                          "digest": "sha256:" + "1" * 64}},
            {"action": "push", "target": {"mediaType": manifest, "repository": "web", "tag": "v2",
                                          "digest": "sha256:" + "2" * 64}},
            {"action": "push", "target": {"mediaType": manifest, "repository": "web",
                                          "digest": "sha256:" + "3" * 64}},
            {"action": "pull", "target": {"mediaType": manifest, "repository": "web", "tag": "v1",
                                          "digest": "sha256:" + "4" * 64}},
        ]
    }
    # Then only the tagged manifest push is an image push
    assert tagged_manifest_pushes(envelope) == [("web", "v2", "sha256:" + "2" * 64)]


def test_the_env_file_is_shell_exports_that_read_back_the_same(tmp_path):
    # Given variables with characters a shell would interpret
    variables = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "COMMAND_LOG_GROUP": "/deployer/x y$z"}
    path = tmp_path / "env"
    path.write_text(env_file_text(variables))
    # Then every line is an export (or unset) and bash reads back exactly the values
    out = subprocess.run(
        ["bash", "-c", f"source {path}; printf '%s\\n' \"$AWS_ENDPOINT_URL\" \"$COMMAND_LOG_GROUP\""],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out == ["http://127.0.0.1:5000", "/deployer/x y$z"]
    assert read_env(path) == variables


def test_a_stand_in_host_runs_the_shell_parts_of_multi_part_user_data_in_cloud_inits_order() -> None:
    # Given a release version's user data: the operator's script, then the deployer's boot part
    from deployer.builders import with_operator_user_data  # noqa: PLC0415

    boot = "#!/bin/sh\n# deployer: web\necho boot\n"
    user_data = with_operator_user_data(b"#!/bin/bash\necho operator\n", boot)

    # When the stand-in reads it as cloud-init would
    scripts = boot_scripts(user_data)

    # Then it runs the operator's script first, then the boot part; plain user data is one script
    assert scripts == [
        ("operator-user-data", "#!/bin/bash\necho operator\n"),
        ("zz-deployer-boot.sh", "#!/bin/sh\n# deployer: web\necho boot\n"),
    ]
    assert boot_scripts("#!/bin/sh\necho hi\n") == [("user-data", "#!/bin/sh\necho hi\n")]
    assert boot_scripts("") == []
