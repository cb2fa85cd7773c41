"""The release's config on a real host: plain variables and secrets pinned by version, fetched by
the agent with the real AWS CLI from Parameter Store and Secrets Manager (a moto server), written
to a 0600 env file that lives exactly as long as its container."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from localcloud.hosts.images import AppImage
from localcloud.hosts.sandbox import HostSandbox, free_port
from tests.host.conftest import SecretStore
from tests.host.helpers import APP, body, container_env, container_id, release_config, swap

pytestmark = pytest.mark.integration


def env_dir(host: HostSandbox) -> Path:
    return Path(host.config["state_dir"]) / "env.d"


def env_file(host: HostSandbox, container: str) -> Path:
    return env_dir(host) / (container + ".env")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def deploy(host: HostSandbox, image: AppImage, config: str, **flags: Any) -> tuple[int, dict[str, Any], str]:
    return swap(host, image, release_config=config or None, **flags)


def test_the_container_sees_the_environment_and_the_pinned_not_the_latest_secret_versions(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given a parameter and a secret with several versions, the release pinned to older ones
    ssm_versions = secret_store.parameter("/web/db-password", "db-v1", "db-v2", "db-v3")
    sm_versions = secret_store.secret("web/api-key", "api-v1", "api-v2")
    config = release_config({"MODE": "production", "GREETING": "a b=c #d"}, [
        {"var": "DB_PASSWORD", "from": "ssm", "id": "/web/db-password", "version": ssm_versions[1]},
        {"var": "API_KEY", "from": "secretsmanager", "id": "web/api-key", "version": sm_versions[0]},
    ])
    host = make_host(**secret_store.host_settings())
    # When release 1 is deployed with that config
    code, summary, err = deploy(host, publish(1), config)
    # Then it serves, and its container sees the plain values and the pinned versions' values
    assert code == 0, (summary, err)
    assert host.get("/") == (200, body(1))
    container = host.state(APP)["container"]
    seen = container_env(container)
    assert seen["MODE"] == "production"
    assert seen["GREETING"] == "a b=c #d"
    assert seen["DB_PASSWORD"] == "db-v2"
    assert seen["API_KEY"] == "api-v1"
    # and the env file is 0600 in a 0700 directory while the container lives
    assert mode(env_file(host, container)) == 0o600
    assert mode(env_dir(host)) == 0o700
    # and the state names the secrets' versions, never a value
    assert host.state(APP)["config"]["secrets"][0] == {
        "var": "DB_PASSWORD", "from": "ssm", "id": "/web/db-password", "version": ssm_versions[1]}
    for value in ("db-v1", "db-v2", "db-v3", "api-v1", "api-v2"):
        assert value not in json.dumps(summary) + err + json.dumps(host.state(APP))


def test_the_env_file_goes_with_its_container_and_a_rollback_restores_the_old_secret_value(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given release 1 live with the secret's version 1
    v1, v2 = secret_store.parameter("/web/token", "token-old", "token-new")
    host = make_host(**secret_store.host_settings())
    first, second = publish(1), publish(2)

    def pinned(version: str) -> str:
        return release_config(secrets=[{"var": "TOKEN", "from": "ssm", "id": "/web/token",
                                        "version": version}])

    assert deploy(host, first, pinned(v1))[0] == 0
    first_container = host.state(APP)["container"]
    assert env_file(host, first_container).exists()
    # When release 2 goes live pinned to version 2
    code, summary, err = deploy(host, second, pinned(v2))
    assert code == 0, (summary, err)
    second_container = host.state(APP)["container"]
    assert container_env(second_container)["TOKEN"] == "token-new"
    # Then release 1's container and its env file are gone; release 2's file is there, 0600
    assert first_container not in host.containers(all_states=True)
    assert not env_file(host, first_container).exists()
    assert mode(env_file(host, second_container)) == 0o600
    # When the app rolls back to release 1's image and config (a new release number)
    rollback = dataclasses.replace(first, release=3)
    code, summary, err = deploy(host, rollback, pinned(v1))
    # Then the container sees the old value, and only the live container's env file is left
    assert code == 0, (summary, err)
    live = host.state(APP)["container"]
    assert container_env(live)["TOKEN"] == "token-old"
    assert host.get("/") == (200, body(1))
    assert sorted(p.name for p in env_dir(host).iterdir()) == [live + ".env"]


def test_a_config_only_release_swaps_the_container_of_the_same_image(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given release 1 live with MODE=blue-sky
    host = make_host(**secret_store.host_settings())
    image = publish(1)
    assert deploy(host, image, release_config({"MODE": "blue-sky"}))[0] == 0
    before = host.state(APP)["container"]
    before_id = container_id(before)
    # When release 2 runs the same image with MODE=green-field
    config_only = dataclasses.replace(image, release=2)
    code, summary, err = deploy(host, config_only, release_config({"MODE": "green-field"}))
    # Then a new container took over (not "already live") and sees the new value
    assert code == 0, (summary, err)
    assert summary["outcome"] == "live"
    after = host.state(APP)["container"]
    assert container_id(after) not in ("", before_id)
    assert container_env(after)["MODE"] == "green-field"
    assert host.state(APP)["previous_release"] == 1
    # When release 2 is sent again, nothing is swapped
    code, summary, _ = deploy(host, config_only, release_config({"MODE": "green-field"}))
    assert (code, summary["outcome"]) == (0, "already_live")
    assert container_id(after) == container_id(host.state(APP)["container"])


@pytest.mark.parametrize("missing", ["no such parameter", "no such version"])
def test_a_secret_that_cannot_be_fetched_fails_the_swap_as_config_and_the_old_release_serves(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
        missing: str,
) -> None:
    # Given release 1 live, and release 2 pinned to a secret version that does not exist
    (version,) = secret_store.parameter("/web/present", "present-value")
    host = make_host(**secret_store.host_settings())
    assert deploy(host, publish(1), "")[0] == 0
    live = host.state(APP)["container"]
    secret = {"var": "GONE", "from": "ssm", "id": "/web/absent", "version": "1"}
    if missing == "no such version":
        secret = {**secret, "id": "/web/present", "version": str(int(version) + 1)}
    # When release 2 is deployed
    code, summary, err = deploy(host, publish(2), release_config({"A": "b"}, [secret]))
    # Then it fails with class config (exit 8), naming the variable and the parameter
    assert code == 8, (summary, err)
    assert summary["failure_class"] == "config"
    assert summary["exit_code"] == 8
    assert "GONE" in summary["message"]
    assert secret["id"] in summary["message"]
    # and release 1 still serves from the same container; no other container, no env file
    assert host.get("/") == (200, body(1))
    assert host.containers(all_states=True) == [live]
    assert host.state(APP)["release"] == 1
    assert not env_dir(host).exists() or list(env_dir(host).iterdir()) == []


@pytest.mark.parametrize("shape", ["two lines", "binary"])
def test_a_secret_that_cannot_be_an_environment_variable_fails_naming_the_variable_but_not_the_value(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
        shape: str,
) -> None:
    # Given a secret whose value spans two lines, or is binary
    if shape == "two lines":
        versions = secret_store.secret("web/cert", "line-one-s3cret\nline-two-s3cret")
    else:
        answer = secret_store.secretsmanager.create_secret(Name="web/cert", SecretBinary=b"binary-s3cret\x00")
        versions = [answer["VersionId"]]
    host = make_host(**secret_store.host_settings())
    config = release_config(secrets=[{"var": "CERT", "from": "secretsmanager", "id": "web/cert",
                                      "version": versions[0]}])
    # When a release pinned to it is deployed
    code, summary, err = deploy(host, publish(1), config)
    # Then it fails as config, naming CERT and why, and the value is nowhere in what the agent printed
    assert (code, summary["failure_class"]) == (8, "config"), (summary, err)
    assert "CERT" in summary["message"]
    assert ("line break" if shape == "two lines" else "binary") in summary["message"]
    assert "s3cret" not in json.dumps(summary) + err
    assert host.containers(all_states=True) == []


def test_boot_takes_the_config_the_release_pointer_carries(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given user data baked with release 1 (no config) while the pointer names release 2 and its config
    baked, current = publish(1), publish(2)
    (version,) = secret_store.parameter("/web/boot-secret", "booted-value")
    config = release_config({"MODE": "from-pointer"},
                            [{"var": "SECRET", "from": "ssm", "id": "/web/boot-secret", "version": version}])
    pointer = {"app": APP, "release": 2, "image": current.reference, "digest": current.digest, "tag": None,
               "source": "push", "updated_at": "2026-01-01T00:00:00Z", "release_config": config}
    secret_store.ssm.put_parameter(Name=f"/deployer/{APP}/release", Value=json.dumps(pointer), Type="String")
    host = make_host(**secret_store.host_settings(), pointer_timeout=30)
    # When the instance boots
    code, summary, err = host.run_agent("boot", [
        *host.swap_args(APP, baked.reference, baked.release), f"--pointer-parameter=/deployer/{APP}/release",
        "--region=us-east-1"])
    # Then release 2 serves with the pointer's config
    assert code == 0, (summary, err)
    assert summary["release"] == 2
    seen = container_env(host.state(APP)["container"])
    assert (seen["MODE"], seen["SECRET"]) == ("from-pointer", "booted-value")


KILLPOINT = Path(__file__).resolve().parents[2] / "localcloud" / "hosts" / "killpoint.sh"
CRASH_POINTS = {
    # secret fetched, nothing written yet
    "after the secret fetch": ("after", "aws *get-parameter*"),
    # env file written, no container yet
    "before docker run": ("before", "docker run *"),
    # the new container runs beside the old one, not live
    "after docker run": ("after", "docker run *"),
    # traffic switched; the old container and its env file still there
    "after the switch": ("after", "nft -f *"),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_swap_killed_at_any_step_of_the_config_path_converges_on_the_next_run(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
        tmp_path: Path, point: str,
) -> None:
    # Given release 1 live, its docker, nft and aws commands passing through a kill point
    kill_dir = tmp_path / "killpoint"
    kill_dir.mkdir()
    wrap = ["sh", str(KILLPOINT), str(kill_dir)]
    settings = secret_store.host_settings()
    host = make_host(**{**settings, "aws_command": [*wrap, *settings["aws_command"]]},
                     docker_command=[*wrap, "docker"], nft_command=[*wrap, "nft"])
    v1, v2 = secret_store.parameter("/web/crash", "crash-old", "crash-new")

    def pinned(version: str) -> str:
        return release_config(secrets=[{"var": "TOKEN", "from": "ssm", "id": "/web/crash",
                                        "version": version}])

    assert deploy(host, publish(1), pinned(v1))[0] == 0
    second = publish(2)
    args = host.swap_args(APP, second.reference, 2, release_config=pinned(v2))
    # When the swap to release 2 is killed (its whole process group, as SSM does) at the point
    when, match = CRASH_POINTS[point]
    (kill_dir / "armed").write_text(f"{when}\n1\n{match}\n\n")
    proc = host.start_agent("swap", args, new_session=True)
    deadline = time.monotonic() + 60
    while not (kill_dir / "reached").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (kill_dir / "reached").exists(), host.finish_agent(proc, timeout=5)
    os.killpg(proc.pid, signal.SIGKILL)
    host.finish_agent(proc, timeout=10)
    (kill_dir / "armed").unlink()
    # Then the same command run again (SSM's retry, the reconciler's re-send) converges:
    code, summary, err = host.run_agent("swap", args)
    assert code == 0, (summary, err)
    assert summary["warning"] is None, summary
    assert host.get("/") == (200, body(2))
    # one container, seeing the pinned value, and its env file the only one left
    (live,) = host.containers(all_states=True)
    assert container_env(live)["TOKEN"] == "crash-new"
    assert sorted(p.name for p in env_dir(host).iterdir()) == [live + ".env"]
    assert mode(env_file(host, live)) == 0o600


def test_a_container_that_fails_its_health_gate_is_removed_with_its_env_file(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given release 1 live, and release 2 (with config) an image whose health check fails
    host = make_host(**secret_store.host_settings(), health_successes=1)
    assert deploy(host, publish(1), release_config({"MODE": "one"}))[0] == 0
    live = host.state(APP)["container"]
    # When release 2 is deployed
    code, summary, err = deploy(host, publish(2, kind="broken"), release_config({"MODE": "two"}),
                                health_timeout=3)
    # Then it fails its health gate; its container and env file are gone, release 1's stay
    assert (code, summary["failure_class"]) == (6, "health"), (summary, err)
    assert host.containers(all_states=True) == [live]
    assert sorted(p.name for p in env_dir(host).iterdir()) == [live + ".env"]
    assert container_env(live)["MODE"] == "one"


def test_an_env_file_left_by_a_killed_run_goes_with_the_next_run_whatever_it_deploys(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
        tmp_path: Path,
) -> None:
    # Given release 1 live, and a swap to release 2 killed after writing its env file, before docker run
    kill_dir = tmp_path / "killpoint"
    kill_dir.mkdir()
    host = make_host(**secret_store.host_settings(),
                     docker_command=["sh", str(KILLPOINT), str(kill_dir), "docker"])
    first = publish(1)
    assert deploy(host, first, release_config({"MODE": "one"}))[0] == 0
    live = host.state(APP)["container"]
    (kill_dir / "armed").write_text("before\n1\ndocker run *\n\n")
    proc = host.start_agent("swap", host.swap_args(APP, publish(2).reference, 2,
                                                   release_config=release_config({"MODE": "two"})),
                            new_session=True)
    deadline = time.monotonic() + 60
    while not (kill_dir / "reached").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    host.finish_agent(proc, timeout=10)
    (kill_dir / "armed").unlink()
    assert len(list(env_dir(host).iterdir())) == 2  # the orphan: no container of its own
    # When release 1 is sent again (already live: nothing starts)
    code, summary, err = deploy(host, first, release_config({"MODE": "one"}))
    # Then the orphaned env file is gone and the live one stays
    assert (code, summary["outcome"]) == (0, "already_live"), (summary, err)
    assert sorted(p.name for p in env_dir(host).iterdir()) == [live + ".env"]


def test_a_secret_s_region_is_its_arn_s_else_the_host_setting(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
        monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a parameter in us-east-1 named by ARN and a secret in eu-west-1 named by name,
    (version,) = secret_store.parameter("/web/east", "east-value")
    arn = secret_store.ssm.get_parameter(Name="/web/east")["Parameter"]["ARN"]
    west = boto3.client("secretsmanager", endpoint_url=secret_store.endpoint, region_name="eu-west-1")
    west_version = west.create_secret(Name="web/west", SecretString="west-value")["VersionId"]
    # a host whose setting says eu-west-1, and an AWS CLI whose own default is yet another region
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    host = make_host(**{**secret_store.host_settings(), "region": "eu-west-1"})
    config = release_config(secrets=[
        {"var": "EAST", "from": "ssm", "id": arn, "version": version},
        {"var": "WEST", "from": "secretsmanager", "id": "web/west", "version": west_version}])
    # When a release pinned to both is deployed
    code, summary, err = deploy(host, publish(1), config)
    # Then each was fetched from its own region
    assert code == 0, (summary, err)
    seen = container_env(host.state(APP)["container"])
    assert (seen["EAST"], seen["WEST"]) == ("east-value", "west-value")


def test_boot_without_a_readable_pointer_keeps_the_live_release_and_its_config(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given release 2 live with its config, on a host whose user data still bakes release 1
    baked, current = publish(1), publish(2)
    (version,) = secret_store.parameter("/web/kept", "kept-value")
    host = make_host(**secret_store.host_settings())
    config = release_config({"MODE": "two"},
                            [{"var": "KEPT", "from": "ssm", "id": "/web/kept", "version": version}])
    assert deploy(host, baked, "")[0] == 0
    assert deploy(host, current, config)[0] == 0
    live = host.state(APP)["container"]
    before = container_id(live)
    # When the boot command re-runs (a reboot) and the pointer cannot be read
    code, summary, err = host.run_agent("boot", [
        *host.swap_args(APP, baked.reference, baked.release), "--pointer-parameter=/deployer/web/absent",
        "--region=us-east-1"])
    # Then release 2 stays, in the same container, with its config
    assert code == 0, (summary, err)
    assert (summary["release"], summary["outcome"]) == (2, "already_live")
    assert container_id(live) == before
    assert container_env(live)["KEPT"] == "kept-value"



ACCOUNT = "123456789012"


@pytest.fixture
def granted_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server that enforces IAM, holding the parameter /web/granted and the secret
    web/granted; the host's credentials are a principal granted ssm:GetParameter only. (moto
    checks the action against resource "*"; scoping to ARNs is the permission evaluator's part.)
    Yields the endpoint and the versions."""
    setup_calls = 5  # the calls below run before enforcement starts; every later one is checked
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(setup_calls), "MOTO_ACCOUNT_ID": ACCOUNT},
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "moto.log").open("w"))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "admin",
                 "aws_secret_access_key": "admin"}
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="deployer-host")
        key = iam.create_access_key(UserName="deployer-host")["AccessKey"]
        iam.put_user_policy(UserName="deployer-host", PolicyName="host-secrets", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}]}))
        versions = {
            "/web/granted": str(boto3.client("ssm", **admin).put_parameter(
                Name="/web/granted", Value="granted-value", Type="SecureString")["Version"]),
            "web/granted": boto3.client("secretsmanager", **admin).create_secret(
                Name="web/granted", SecretString="ungranted-secret-value")["VersionId"],
        }
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield endpoint, versions
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_secret_the_host_role_may_not_read_fails_the_swap_as_config_and_the_old_release_serves(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage],
        granted_store: tuple[str, dict[str, str]],
) -> None:
    endpoint, versions = granted_store
    host = make_host(aws_command=["aws", "--endpoint-url", endpoint], region="us-east-1")
    param = {"var": "PARAM", "from": "ssm", "id": "/web/granted", "version": versions["/web/granted"]}
    # Given a host whose credentials may call ssm:GetParameter and nothing else: release 1, pinned
    # to a parameter, goes live with it
    code, summary, err = deploy(host, publish(1), release_config(secrets=[param]))
    assert code == 0, (summary, err)
    assert container_env(host.state(APP)["container"])["PARAM"] == "granted-value"
    # When release 2 also names a Secrets Manager secret
    secret = {"var": "OTHER", "from": "secretsmanager", "id": "web/granted",
              "version": versions["web/granted"]}
    code, summary, err = deploy(host, publish(2), release_config(secrets=[param, secret]))
    # Then the swap fails as config (exit 8), naming the variable and the denial; release 1 serves
    assert (code, summary["failure_class"]) == (8, "config"), (summary, err)
    assert "OTHER" in summary["message"]
    assert "AccessDenied" in summary["message"]
    assert "ungranted-secret-value" not in json.dumps(summary) + err
    assert host.get("/") == (200, body(1))


def test_a_new_config_passes_the_full_health_gate_and_a_config_that_served_here_the_short_one(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], secret_store: SecretStore,
) -> None:
    # Given a health gate of 15 answers 0.2 s apart (about 3 s), and release 1 live with MODE=a
    host = make_host(**secret_store.host_settings(), health_successes=15, health_interval=0.2)
    image = publish(1)
    assert deploy(host, image, release_config({"MODE": "a"}))[0] == 0
    # When release 2 runs the same image with a config never live here
    code, summary, err = deploy(host, dataclasses.replace(image, release=2), release_config({"MODE": "b"}))
    # Then it waits out the full gate: an image that served says nothing about a new config
    assert code == 0, (summary, err)
    assert summary["timings"]["health"] >= 2.8
    # When release 3 rolls back to the image and config of release 1
    code, summary, err = deploy(host, dataclasses.replace(image, release=3), release_config({"MODE": "a"}))
    # Then one healthy answer suffices, as for any rollback to what served here
    assert code == 0, (summary, err)
    assert summary["timings"]["health"] < 1.5
    assert container_env(host.state(APP)["container"])["MODE"] == "a"
