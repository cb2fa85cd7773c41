"""The agent's release task (`agent.py task`) against a real Docker engine and registry: the argv
runs in a one-shot container of the image, with the app container's env; a failure exits 9 with
the tail; a task past its timeout is stopped; a repeated task is answered from the host's record."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deployer import builders
from deployer.models.config import AppConfig

from localcloud.aws.stack import load_yaml
from localcloud.hosts.images import BUSYBOX, push_image, remove_images
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox
from tests.conftest import make_release
from tests.host.conftest import SecretStore
from tests.host.helpers import APP, release_config
from tools.render_template import ensure_built

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

TASK_EXIT = 9


@pytest.fixture
def task_image(registry: Registry) -> Iterator[str]:
    """A busybox image without an entrypoint (the task's argv is its command), pushed and removed
    locally, so the agent must pull it; its by-digest reference."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
        tar.addfile(link)
        nonce = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("build-id")
        info.size = len(nonce)
        tar.addfile(info, io.BytesIO(nonce))
    repository = f"task-{uuid.uuid4().hex[:8]}"
    tag = f"deployer-test/{repository}:1"
    subprocess.run(["docker", "import", "-", tag], input=buffer.getvalue(), check=True, capture_output=True)
    digest = push_image(tag, registry.push_address, repository)
    remove_images([tag])
    reference = f"{registry.address}/{repository}@{digest}"
    yield reference
    remove_images([reference])


def encode(argv: list[str]) -> str:
    return base64.b64encode(json.dumps(argv).encode()).decode()


def shell(script: str) -> list[str]:
    return ["/bin/busybox", "sh", "-c", script]


def run_task(host: HostSandbox, image: str, argv: list[str], *, release: int = 4, timeout: int = 60,
             **flags: str) -> tuple[int, dict[str, Any], str]:
    args = [f"--app={APP}", f"--image={image}", f"--release={release}", f"--argv={encode(argv)}",
            f"--timeout={timeout}", "--registry-login=none"]
    args += [f"--{name.replace('_', '-')}={value}" for name, value in flags.items()]
    return host.run_agent("task", args, timeout=180)


def task_containers(host: HostSandbox) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=deployer.host={host.host_id}",
                          "--filter", f"label=deployer.task={APP}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True).stdout
    return [name for name in out.splitlines() if name]


def record(host: HostSandbox, release: int) -> dict[str, Any]:
    path = Path(host.config["state_dir"]) / APP / "tasks" / f"{release}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    assert path.stat().st_mode & 0o777 == 0o600
    return data


def test_the_task_runs_its_argv_in_a_one_shot_container_of_the_image_with_the_apps_env(
        host: HostSandbox, task_image: str, tmp_path: Path) -> None:
    # Given an env file the app's container gets, and a task that prints what it sees
    env_file = tmp_path / "web.env"
    env_file.write_text("DATABASE_URL=postgres://db.internal/web\n")
    argv = shell('echo "migrating $DATABASE_URL for release $DEPLOYER_RELEASE of $DEPLOYER_APP"; echo done')
    # When the agent runs the task of release 4
    code, summary, err = run_task(host, task_image, argv, env_file=str(env_file))
    # Then it succeeded, and the container saw the env file and the deployer variables
    assert code == 0, (summary, err)
    assert summary["outcome"] == "task_succeeded"
    assert summary["failure_class"] == "none"
    assert summary["container_exit"] == 0
    assert summary["log_tail"] == ["migrating postgres://db.internal/web for release 4 of web", "done"]
    # and its output went to the command's output (stderr), line by line
    assert "task| migrating postgres://db.internal/web for release 4 of web" in err
    # and the one-shot container is gone, the result recorded for the release
    assert task_containers(host) == []
    assert record(host, 4)["exit_code"] == 0


def test_the_task_sees_the_release_s_pinned_config_and_its_env_file_goes_with_it(
        make_host: Callable[..., HostSandbox], task_image: str, secret_store: SecretStore) -> None:
    # Given a secret with two versions, the release pinned to the first, and a plain variable
    versions = secret_store.parameter("/web/db-password", "db-v1", "db-v2")
    config = release_config({"MODE": "migrate"}, [
        {"var": "DB_PASSWORD", "from": "ssm", "id": "/web/db-password", "version": versions[0]},
    ])
    host = make_host(**secret_store.host_settings())
    argv = shell('echo "mode=$MODE password=$DB_PASSWORD"')
    # When the agent runs the release's task with that config
    code, summary, err = run_task(host, task_image, argv, release_config=config)
    # Then the one-shot container saw the plain value and the pinned (not the latest) version
    assert code == 0, (summary, err)
    assert summary["log_tail"] == ["mode=migrate password=db-v1"]
    # and no env file outlives the task's container
    env_dir = Path(host.config["state_dir"]) / "env.d"
    assert not env_dir.exists() or list(env_dir.iterdir()) == []
    assert task_containers(host) == []


def test_a_failing_task_exits_9_with_its_exit_code_and_last_lines(
        host: HostSandbox, task_image: str) -> None:
    # Given a task that fails after some output
    argv = shell("for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18; do echo step $i; done; "
                 "/bin/busybox sleep 1; echo 'relation users does not exist' >&2; exit 3")
    # When the agent runs it
    code, summary, _ = run_task(host, task_image, argv)
    # Then the agent exits with the task class, naming the task's exit code and its last lines
    assert code == TASK_EXIT, summary
    assert summary["outcome"] == "failed"
    assert summary["failure_class"] == "task"
    assert summary["exit_code"] == TASK_EXIT
    assert summary["container_exit"] == 3
    # (stdout and stderr are two pipes: lines written a moment apart keep their order)
    tail = summary["log_tail"]
    assert tail[-2:] == ["step 18", "relation users does not exist"]
    assert "step 1" not in tail  # only the last lines
    assert len(tail) == 15
    assert "exited with code 3" in summary["message"]
    assert task_containers(host) == []


def test_a_task_past_its_timeout_is_stopped_and_fails(host: HostSandbox, task_image: str) -> None:
    # Given a task that would run for five minutes, with a 10 s timeout
    argv = shell("echo started; exec /bin/busybox sleep 300")
    # When the agent runs it
    started = time.monotonic()
    code, summary, _ = run_task(host, task_image, argv, timeout=10)
    elapsed = time.monotonic() - started
    # Then it was stopped at its timeout, counts as a failure, and no container is left
    assert code == TASK_EXIT, summary
    assert summary["failure_class"] == "task"
    assert "timeout of 10s" in summary["message"]
    assert summary["log_tail"] == ["started"]
    assert elapsed < 60
    assert task_containers(host) == []
    assert record(host, 4)["timed_out"] is True


def test_a_repeated_task_for_the_same_release_is_answered_from_the_record(
        host: HostSandbox, task_image: str) -> None:
    # Given release 4's task ran and succeeded
    first, summary, _ = run_task(host, task_image, shell("echo migrated once"))
    assert first == 0, summary
    # When the same release's task is sent again (here with an argv that would fail if it ran)
    code, again, err = run_task(host, task_image, shell("echo ran twice; exit 5"))
    # Then the agent answers from its record: same result, the argv never ran
    assert code == 0, again
    assert again["outcome"] == "task_succeeded"
    assert again["log_tail"] == ["migrated once"]
    assert "not run again" in again["message"]
    assert "ran twice" not in err
    # and another release's task does run
    other, failed, _ = run_task(host, task_image, shell("echo ran for 5; exit 5"), release=5)
    assert (other, failed["container_exit"], failed["log_tail"]) == (TASK_EXIT, 5, ["ran for 5"])


def test_a_repeated_failed_task_answers_its_failure_without_running(
        host: HostSandbox, task_image: str) -> None:
    # Given release 4's task failed
    first, _, _ = run_task(host, task_image, shell("echo boom; exit 4"))
    assert first == TASK_EXIT
    # When it is sent again
    code, again, err = run_task(host, task_image, shell("echo second run"))
    # Then the same failure comes back from the record
    assert code == TASK_EXIT
    assert (again["container_exit"], again["log_tail"]) == (4, ["boom"])
    assert "second run" not in err


def test_an_argv_that_is_not_a_list_of_printable_strings_is_refused_before_anything_runs(
        host: HostSandbox, task_image: str) -> None:
    for argv in ("e30=", base64.b64encode(b'["echo", "a\\nb"]').decode(), "not base64!"):
        args = [f"--app={APP}", f"--image={task_image}", "--release=4", f"--argv={argv}", "--timeout=60"]
        code, summary, _ = host.run_agent("task", args)
        assert code == 2, (argv, summary)
        assert summary["failure_class"] == "input"
        assert "--argv" in summary["message"]
    assert not (Path(host.config["state_dir"]) / APP / "tasks").exists()


def test_the_deployable_task_document_runs_the_control_planes_parameters_through_its_embedded_agent(
        host: HostSandbox, task_image: str, tmp_path: Path) -> None:
    # Given the parameters the control plane sends for an app whose task prints and succeeds
    config = AppConfig.parse({
        "app": APP, "repository": "team/web", "registry_login": "none", "auto_scaling_group": "web-asg",
        "launch_template": "lt-0123456789abcdef0", "container": {"port": 8080},
        "release_task": ["/bin/busybox", "sh", "-c", "echo migrated $DEPLOYER_RELEASE"],
    })
    parameters = builders.task_parameters(config, make_release(6, image=task_image,
                                                                digest=task_image.rpartition("@")[2]))
    # and the rendered TaskDocument's script with them substituted, as SSM (and the local cloud's
    # SSM stand-in) runs it
    content = load_yaml(ensure_built().read_text())["Resources"]["TaskDocument"]["Properties"]["Content"]
    (step,) = content["mainSteps"]
    script = "\n".join(step["inputs"]["runCommand"])
    for name, spec in content["parameters"].items():
        value = parameters.get(name, [str(spec.get("default", ""))])[0]
        assert re.fullmatch(spec["allowedPattern"], value), name
        script = re.sub(r"\{\{\s*" + name + r"\s*\}\}", value, script)
    assert "{{" not in script
    script = script.replace("/opt/deployer", str(tmp_path / "opt"))
    # When bash runs it
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, DEPLOYER_HOST_CONFIG=str(host.config_path)), check=False)
    # Then the embedded agent ran the task once, and stdout is exactly its summary
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = proc.stdout.splitlines()
    summary = json.loads(line)
    assert (summary["outcome"], summary["release"]) == ("task_succeeded", 6)
    assert summary["log_tail"] == ["migrated 6"]
    assert (tmp_path / "opt" / "agent.py").read_bytes() == (ROOT / "host" / "agent.py").read_bytes()
