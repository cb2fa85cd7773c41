"""The user data a launch-template version boots with, observed where it acts.

The user data is run with sh, as cloud-init runs it, against a stand-in `aws` (it serves the
swap document, rendered by tools/render_template.py around a stand-in agent that records its
arguments) and a stand-in `sleep`: the test sees the AWS CLI call, the retries, the agent
extracted and the exact arguments the agent boots with. The names it refuses, and its size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from deployer import builders
from deployer.errors import InvalidAppConfig, UserDataTooLarge
from deployer.models.config import AppConfig
from deployer.models.records import Release
from moto.server import ThreadedMotoServer

from localcloud.hosts.sandbox import free_port
from tests.conftest import make_release
from tools import render_template

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ef" * 32
IMAGE = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/web@{DIGEST}"
POINTER = "/deployer/web/release"
DOCUMENT: dict[str, Any] = {
    "app": "web",
    "repository": "team/web",
    "auto_scaling_group": "web-asg",
    "launch_template": "lt-0123456789abcdef0",
    "container": {
        "port": 8080,
        "health_path": "/health",
        "health_timeout": 30,
        "docker_options": ["--memory=256m", "--pids-limit=200"],
        "log_options": {"max-size": "10m", "max-file": "3"},
    },
    "rollout": {"command_timeout": 300},
}
# The agent the document carries in these tests: it records its arguments and says so.
RECORDING_AGENT = (
    "import json, os, sys\n"
    "with open(os.path.join(os.environ['FAKE_DIR'], 'agent-argv.json'), 'w') as out:\n"
    "    json.dump(sys.argv[1:], out)\n"
    "print('booted')\n"
)
FAKE_AWS = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_DIR/aws-args"
n=$(cat "$FAKE_DIR/aws-calls" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$FAKE_DIR/aws-calls"
[ "$n" -gt "$FAKE_FAILS" ] || exit 255
cat "$FAKE_DIR/document.json"
"""
FAKE_SLEEP = '#!/bin/sh\necho "$1" >> "$FAKE_DIR/sleeps"\n'


def config(**changes: Any) -> AppConfig:
    return AppConfig.parse({**DOCUMENT, **changes})


def release(image: str = IMAGE) -> Release:
    return make_release(7, image=image, digest=DIGEST)


@dataclass
class Boot:
    returncode: int
    stderr: str
    dir: Path

    def read(self, name: str) -> str | None:
        path = self.dir / name
        return path.read_text() if path.exists() else None

    @property
    def agent_argv(self) -> list[str] | None:
        text = self.read("agent-argv.json")
        return None if text is None else json.loads(text)

    @property
    def aws_calls(self) -> int:
        return int(self.read("aws-calls") or 0)

    @property
    def sleeps(self) -> list[str]:
        return (self.read("sleeps") or "").split()


def boot(
    tmp_path: Path, script: str, document: dict[str, Any] | None = None, fails: int = 0, shell: str = "sh"
) -> Boot:
    """Run `script` with `shell` as an instance would, with /opt/deployer and the boot log under
    tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("aws", FAKE_AWS), ("sleep", FAKE_SLEEP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    if document is None:
        document = render_template.swap_document(render_template.render(agent=RECORDING_AGENT))
    (tmp_path / "document.json").write_text(json.dumps(document))
    local = script.replace(builders.AGENT_DIR, str(tmp_path / "opt")).replace(
        "/var/log/deployer-boot.log", str(tmp_path / "boot.log")
    )
    proc = subprocess.run(
        [shell, "-c", local],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DIR": str(tmp_path), "FAKE_FAILS": str(fails)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Boot(proc.returncode, proc.stderr, tmp_path)


def user_data(cfg: AppConfig | None = None) -> str:
    return builders.user_data(cfg or config(), release(), "deployer-swap", POINTER, "eu-west-1")


# ------------------------------------------------------------------ user_data, run
def test_the_boot_script_installs_the_documents_agent_and_boots_the_release(tmp_path: Path) -> None:
    # Given the boot script of release 7 and an SSM that serves the swap document
    script = user_data()
    # When an instance runs it
    booted = boot(tmp_path, script)
    # Then it read the document once with the AWS CLI, as JSON text
    assert booted.returncode == 0, booted.stderr
    assert booted.aws_calls == 1
    assert booted.read("aws-args") == "\n".join(
        [
            "ssm",
            "get-document",
            "--region",
            "eu-west-1",
            "--name",
            "deployer-swap",
            "--document-format",
            "JSON",
            "--query",
            "Content",
            "--output",
            "text",
            "",
        ]
    )
    # And installed the agent the document carries, byte for byte, leaving no partial file
    assert (tmp_path / "opt" / "agent.py").read_text() == RECORDING_AGENT
    assert sorted(p.name for p in (tmp_path / "opt").iterdir()) == ["agent.py", "document.json"]
    # And booted release 7 with every swap parameter, the pointer first, each as one argument
    assert booted.agent_argv == [
        "boot",
        "--app=web",
        f"--image={IMAGE}",
        "--release=7",
        "--port=8080",
        "--health-path=/health",
        "--health-timeout=30",
        "--env-file=",
        "--docker-options=--memory=256m --pids-limit=200",
        "--log-driver=json-file",
        "--log-options=max-file=3,max-size=10m",
        "--retain=3",
        "--registry-login=ecr",
        "--release-config=",
        f"--pointer-parameter={POINTER}",
        "--region=eu-west-1",
    ]
    # And the agent's output went to the boot log, without a retry on the way
    assert booted.read("boot.log") == "booted\n"
    assert booted.sleeps == []


def test_the_script_is_a_posix_shell_script_that_names_the_release() -> None:
    lines = user_data().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == f"# deployer: web release 7 {DIGEST}"
    assert user_data().endswith(" >>/var/log/deployer-boot.log 2>&1\n")


# /bin/sh is dash on Debian and Ubuntu images and bash on Amazon Linux: the retry loop must hold
# in both (bash, unlike dash, refuses an unset counter under `set -u`).
SHELLS = ["sh", "bash"]


@pytest.mark.parametrize("shell", SHELLS)
def test_an_unreachable_ssm_is_retried_with_a_growing_pause(tmp_path: Path, shell: str) -> None:
    # Given an SSM that fails the first two reads
    booted = boot(tmp_path, user_data(), fails=2, shell=shell)
    # Then the third read succeeds after pauses of 1 and 2 seconds, and the release boots
    assert booted.returncode == 0, booted.stderr
    assert booted.aws_calls == 3
    assert booted.sleeps == ["1", "2"]
    assert booted.agent_argv is not None


@pytest.mark.parametrize("shell", SHELLS)
def test_an_ssm_that_never_answers_fails_the_boot_after_the_last_attempt(tmp_path: Path, shell: str) -> None:
    booted = boot(tmp_path, user_data(), fails=1000, shell=shell)
    assert booted.returncode == 1
    assert booted.aws_calls == builders.DOCUMENT_ATTEMPTS
    assert booted.sleeps == [str(n) for n in range(1, builders.DOCUMENT_ATTEMPTS)]
    assert booted.agent_argv is None
    assert booted.read("boot.log") is None


def test_a_document_without_an_agent_stops_the_boot_before_any_agent_runs(tmp_path: Path) -> None:
    # Given a document whose script carries no agent
    document = {"schemaVersion": "2.2", "mainSteps": [{"inputs": {"runCommand": ["echo no agent"]}}]}
    # When the boot script runs
    booted = boot(tmp_path, user_data(), document=document)
    # Then it fails at the extraction: no agent file, and no boot attempted (nothing in the log)
    assert booted.returncode != 0
    assert not (tmp_path / "opt" / "agent.py").exists()
    assert booted.read("boot.log") is None


# ------------------------------------------------------------------ user_data, refused
def test_a_pointer_parameter_may_hold_capitals() -> None:
    script = builders.user_data(config(), release(), "deployer-swap", "/Deployer/Web/release", "eu-west-1")
    assert "--pointer-parameter=/Deployer/Web/release " in script


@pytest.mark.parametrize(
    ("document", "pointer", "region", "message"),
    [
        ("deployer-swap", "deployer/web", "eu-west-1", "pointer parameter name 'deployer/web' is not valid"),
        ("deployer-swap", POINTER, "eu-west", "region 'eu-west' is not valid"),
        ("swap doc", POINTER, "eu-west-1", "swap document name 'swap doc' is not valid"),
    ],
)
def test_a_refused_name_is_named_in_the_error(document: str, pointer: str, region: str, message: str) -> None:
    with pytest.raises(InvalidAppConfig) as refused:
        builders.user_data(config(), release(), document, pointer, region)
    assert str(refused.value) == message


def test_user_data_of_exactly_the_limit_is_refused_and_one_byte_less_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = len(user_data().encode())
    monkeypatch.setattr(builders, "USER_DATA_LIMIT", size + 1)
    assert len(user_data().encode()) == size
    monkeypatch.setattr(builders, "USER_DATA_LIMIT", size)
    with pytest.raises(UserDataTooLarge) as refused:
        user_data()
    assert str(refused.value) == f"user data is {size} bytes; EC2 allows {size}"


# ------------------------------------------------------------------ against the real AWS CLI
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
