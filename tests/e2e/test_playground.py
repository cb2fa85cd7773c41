"""The playground: `make up` leaves a local cloud running, the `deployer` CLI works against it from
the environment `.localcloud/env` gives, a `docker push` deploys like an ECR push, and
`make down` leaves nothing behind. One playground for the module (in a temporary directory, so
a developer's own playground is untouched); the steps run in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deployer.settings import Settings

from localcloud.images import build_app_image, remove_images
from localcloud.playground import APP, paths, read_env
from tests.e2e.conftest import docker_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER = str(Path(sys.executable).parent / "deployer")


def make(target: str, state: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCALCLOUD_PLAYGROUND_DIR": str(state)}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target, "BOOTSTRAPPED=1"],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not docker_ready():
        pytest.fail("the e2e tests need the Docker engine and nginx (tools/services.sh start)")
    state = tmp_path_factory.mktemp("playground") / ".localcloud"
    started = make("up", state)
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    try:
        yield state
    finally:
        make("down", state)


@pytest.fixture(scope="module")
def shell_env(state: Path) -> dict[str, str]:
    """A shell after `source .localcloud/env`, with nothing of the caller's AWS setup."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, **read_env(paths(state)["env"]), "COLUMNS": "200"}


def deployer(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEPLOYER, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def history(env: dict[str, str]) -> list[dict[str, Any]]:
    proc = deployer(env, "--json", "history", APP)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def test_make_up_run_twice_says_the_playground_is_already_up(state: Path) -> None:
    again = make("up", state, timeout=60)
    assert again.returncode == 0
    assert "already up" in again.stdout


def test_the_env_file_gives_the_endpoint_credentials_region_and_the_stacks_outputs(
    shell_env: dict[str, str],
) -> None:
    assert shell_env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert shell_env["AWS_ACCESS_KEY_ID"]
    assert shell_env["AWS_SECRET_ACCESS_KEY"]
    settings = Settings.from_env(shell_env)
    assert settings.apps_table.startswith("deployer-AppsTable-")
    assert shell_env["DEPLOYER_ROLLBACK_FUNCTION"]
    assert shell_env["DEPLOYER_DIAGNOSE_DOCUMENT"]
    assert shell_env["DEPLOYER_LOCAL_REGISTRY"].startswith("127.0.0.1:")
    # The same outputs the AWS CLI reads from CloudFormation
    out = subprocess.run(
        ["aws", "cloudformation", "describe-stacks", "--stack-name", "deployer",
         "--query", "Stacks[0].Outputs[?OutputKey=='AppsTableName'].OutputValue", "--output", "text"],
        env=shell_env, capture_output=True, text=True, check=True, timeout=120,
    )
    assert out.stdout.strip() == settings.apps_table


def test_status_shows_web_on_v1_on_three_hosts_without_drift(shell_env: dict[str, str]) -> None:
    proc = deployer(shell_env, "--json", "status", APP)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["app"] == APP
    assert view["current"]["tag"] == "v1"
    assert len(view["hosts"]) == 3
    assert all(h["release"] == view["current"]["release"] for h in view["hosts"])
    assert not view["drift"]
    assert view["launch_template"]["in_sync"]


def test_history_has_v1_succeeded_and_the_broken_push_not_deployed(shell_env: dict[str, str]) -> None:
    rows = history(shell_env)
    assert [(r["tag"], r["status"]) for r in rows] == [("v1", "SUCCEEDED")]
    assert rows[0]["source"] == "push"


@pytest.mark.parametrize(
    ("case", "args", "env_change"),
    [
        ("unknown app", ["status", "nope"], {}),
        ("unreachable endpoint", ["--endpoint-url", "http://127.0.0.1:9", "status", APP], {}),
        ("no credentials", ["status", APP],
         {"drop": "AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN"}),
        ("no stack settings", ["status", APP], {"drop": "APPS_TABLE"}),
        ("usage", ["deploy", APP], {}),
        ("unknown release", ["wait", APP, "--release", "999"], {}),
    ],
)
def test_every_error_exits_non_zero_with_one_line(
    shell_env: dict[str, str], tmp_path: Path, case: str, args: list[str], env_change: dict[str, str]
) -> None:
    env = {k: v for k, v in shell_env.items() if k not in env_change.get("drop", "").split()}
    nowhere = str(tmp_path / "none")
    env.update({"AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere,
                "AWS_EC2_METADATA_DISABLED": "true"})
    proc = deployer(env, *args, timeout=120)
    assert proc.returncode != 0, case
    assert len(proc.stderr.strip().splitlines()) == 1, (case, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_an_invalid_config_is_refused_in_one_line(shell_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "web.json"
    bad.write_text(json.dumps({"app": "Web!", "repository": "web"}))
    proc = deployer(shell_env, "config", "validate", str(bad))
    assert proc.returncode == 4
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_docker_push_to_the_local_registry_deploys_like_an_ecr_push(shell_env: dict[str, str]) -> None:
    # Given an image pushed with docker to $DEPLOYER_LOCAL_REGISTRY/web:v2
    local = "localcloud/playground-test:v2"
    image_id = build_app_image(local, 2, app=APP)
    remote = f"{shell_env['DEPLOYER_LOCAL_REGISTRY']}/{APP}:v2"
    try:
        subprocess.run(["docker", "tag", local, remote], check=True, capture_output=True)
        subprocess.run(["docker", "push", "-q", remote], check=True, capture_output=True, timeout=120)
    finally:
        subprocess.run(["docker", "rmi", remote], check=False, capture_output=True)
        remove_images([image_id])
    # When the push event has recorded a release
    deadline = time.monotonic() + 60
    while not [r for r in history(shell_env) if r["tag"] == "v2"]:
        assert time.monotonic() < deadline, "no release for the push of web:v2"
        time.sleep(1)
    release = next(r for r in history(shell_env) if r["tag"] == "v2")
    # Then `deployer wait` follows it to success
    proc = deployer(shell_env, "wait", APP, "--release", str(release["release"]))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    status = json.loads(deployer(shell_env, "--json", "status", APP).stdout)
    assert status["current"]["tag"] == "v2"
    assert {h["release"] for h in status["hosts"]} == {release["release"]}


def test_deploy_wait_of_the_broken_image_exits_2_and_names_the_health_failure(
    shell_env: dict[str, str],
) -> None:
    proc = deployer(shell_env, "deploy", APP, "--tag", "broken", "--wait")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr
    assert "health" in (proc.stdout + proc.stderr).lower()
    status = json.loads(deployer(shell_env, "--json", "status", APP).stdout)
    assert status["current"]["tag"] == "v2"  # back on the last good release


def test_logs_show_the_swap_output_and_the_app_containers_lines(shell_env: dict[str, str]) -> None:
    # The broken release's container wrote why it is broken; the forwarder shipped it as awslogs would
    deadline = time.monotonic() + 30
    while True:
        proc = deployer(shell_env, "--json", "logs", APP, "--since", "30m")
        assert proc.returncode == 0, proc.stderr
        lines = json.loads(proc.stdout)
        app_lines = [line["message"] for line in lines if line["source"] == "app"]
        if any("broken" in m for m in app_lines) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert any(line["source"] == "swap" for line in lines)
    assert any("broken" in m for m in app_lines), app_lines[-5:]


def test_diagnose_names_no_failing_layer_on_a_healthy_host(shell_env: dict[str, str]) -> None:
    status = json.loads(deployer(shell_env, "--json", "status", APP).stdout)
    host = status["hosts"][0]["instance_id"]
    proc = deployer(shell_env, "--json", "diagnose", APP, "--host", host)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    report = json.loads(proc.stdout)
    assert report["layer"] == "none"
    assert report["checks"]


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                out.append(f"{proc_dir.name}: {cmdline[:120]}")
    return out


def test_make_down_leaves_nothing_behind(state: Path, shell_env: dict[str, str]) -> None:
    # Given what the playground runs
    info = json.loads(paths(state)["info"].read_text())
    host_ids = [d.name for d in (paths(state)["cloud"] / "hosts").iterdir() if d.is_dir()]
    assert host_ids
    # When it is brought down
    down = make("down", state, timeout=300)
    assert down.returncode == 0, down.stderr
    assert "did not stop" not in down.stderr  # the daemon cleaned up after itself
    # Then no container, nginx, registry, moto server, image or file of it is left
    for host_id in host_ids:
        containers = subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=deployer.host={host_id}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert containers == [], host_id
    # the daemon (serve --dir <state>), nginx -p <host dir>, docker-registry <config>
    assert _processes_mentioning(str(state)) == []
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(shell_env["AWS_ENDPOINT_URL"] + "/moto-api/data.json", timeout=2)
    images = subprocess.run(["docker", "images", "--format", "{{.Repository}}"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert not [i for i in images if i.startswith((info["registry"] + "/", info["registry_pull"] + "/"))]
    assert not state.exists()
    again = make("down", state, timeout=60)
    assert "not up" in again.stdout
