"""Secrets never travel: the env file's content stays on the host, and registry credentials are
fetched by the host with its instance role at run time, handed to docker on stdin only.

The control-plane half runs a push through on-image-push in moto and greps everything it
produced (launch-template user data, the swap command's parameters, stored records and pointer,
logs, metrics) for secrets planted in the env file. The host half runs the agent's `main` with a
recording stand-in for its process runner (docker, aws, nginx, nft: nothing executed) and greps
argv, stdout (the summary SSM keeps as command output) and stderr for the planted ECR token.

The release-config half plants values in Parameter Store and Secrets Manager (a moto server),
deploys releases pinned to them on a real host (Docker, nginx, the real AWS CLI) and finds them
inside the container's environment and its 0600 env file, and nowhere else: not in the agent's
argv, stdout, stderr, state, `status` or `diagnose` output, nor in the host's files, the
container's labels and command, or the files of a release that failed.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.on_image_push.app import handler as on_image_push
from localcloud.hosts.images import AppImage
from localcloud.hosts.sandbox import HostSandbox
from tests.conftest import REGION, CallRecorder, read_event
from tests.host.conftest import SecretStore, make_host, publish, registry, secret_store  # noqa: F401 - fixtures
from tests.host.helpers import APP, container_env, release_config
from tests.lifecycle.iam_scenarios import FakeContext
from tests.security.test_injection import AGENT, VALID_ARGV, _Runner

ENV_SECRET = "DB_PASSWORD=pl4nted-env-s3cret-9f8e7d"
TOKEN = "pl4nted-ecr-t0ken-" + "Q" * 40


def _everything_the_control_plane_wrote(fleet: Any) -> dict[str, str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    versions = ec2.describe_launch_template_versions(
        LaunchTemplateId=fleet.template_id)["LaunchTemplateVersions"]
    user_data = [base64.b64decode(v["LaunchTemplateData"].get("UserData", "")).decode(errors="replace")
                 for v in versions]
    ssm = boto3.client("ssm", region_name=REGION)
    commands = ssm.list_commands()["Commands"]
    parameters = ssm.get_parameters_by_path(Path="/", Recursive=True)["Parameters"]
    ddb = boto3.client("dynamodb", region_name=REGION)
    items = {t: ddb.scan(TableName=t)["Items"] for t in ddb.list_tables()["TableNames"]}
    return {"user data": "\n".join(user_data), "swap command parameters": json.dumps(
        [c["Parameters"] for c in commands]), "pointer and parameters": json.dumps(parameters, default=str),
        "stored records": json.dumps(items)}


@pytest.mark.unit
def test_a_push_carries_the_env_file_path_to_hosts_but_never_its_content(
        lambda_env: Any, fleet: Any, deps: Any, web_config: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, aws_calls: CallRecorder,
) -> None:
    from deployer.models.config import AppConfig  # noqa: PLC0415

    # Given an app whose env file on the host holds a secret
    env_file = tmp_path / "web.env"
    env_file.write_text(ENV_SECRET + "\n")
    deps.apps.put(AppConfig.parse({**web_config, "container": {**web_config["container"],
                                                                "env_file": str(env_file)}}))
    caplog.set_level(logging.DEBUG)
    # When an image is pushed and the control plane deploys it
    answer = on_image_push(read_event("ecr_image_push"), FakeContext())
    assert answer["status"] != "rejected", answer
    written = _everything_the_control_plane_wrote(fleet)
    written["logs"] = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    written["stdout (logs, metrics)"] = capsys.readouterr().out
    # Then the swap command and the boot script name the file, so the host reads it itself,
    assert str(env_file) in written["swap command parameters"]
    assert str(env_file) in written["user data"]
    # and the secret is in none of what was sent or kept
    leaked = [where for where, text in written.items() if "pl4nted-env-s3cret" in text]
    assert not leaked, leaked
    # and no registry credential was asked for: hosts fetch their own with the instance role
    assert "GetAuthorizationToken" not in {c.operation for c in aws_calls.calls}


@pytest.mark.unit
def test_no_function_may_fetch_registry_credentials(template: dict[str, Any]) -> None:
    # Registry credentials come from each host's instance role; the control plane cannot get any.
    from tests.iam.test_least_privilege import deployed_template, identity_statements  # noqa: PLC0415

    deployed = deployed_template()
    # HostPolicy is the hosts' (operators attach it to the instance role), never a function's
    roles = [r for r in deployed["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert all({"Ref": "HostPolicy"} not in r["Properties"].get("ManagedPolicyArns", []) for r in roles)
    actions = {str(a) for where, s in identity_statements(deployed) if where != "HostPolicy"
               for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert not {a for a in actions if a.startswith("ecr:Get") or a == "ecr:*"}, actions


class _Host(_Runner):
    """The host's commands: ECR hands out the planted token; the pull is refused."""

    def __call__(self, cmd: list[str], timeout: float = 120, stdin: str | None = None) -> Any:
        super().__call__(cmd, timeout, stdin)
        if cmd[:3] == ["aws", "ecr", "get-login-password"]:
            return subprocess.CompletedProcess(cmd, 0, TOKEN + "\n", "")
        if cmd[:3] == ["docker", "image", "inspect"]:
            return subprocess.CompletedProcess(cmd, 1, "", "No such image")
        if cmd[:2] == ["docker", "pull"]:
            return subprocess.CompletedProcess(cmd, 1, "", "pull access denied for team/web")
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.mark.unit
def test_the_agent_fetches_the_registry_token_at_run_time_and_hands_it_to_docker_on_stdin_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a host whose instance role gets an ECR token, and an env file with a secret
    env_file = tmp_path / "web.env"
    env_file.write_text(ENV_SECRET + "\n")
    host_config = tmp_path / "host.json"
    host_config.write_text(json.dumps({"state_dir": str(tmp_path / "state"),
                                       "nginx_conf_dir": str(tmp_path / "nginx"),
                                       "pull_attempts": 2, "pull_backoff": 0.01, "pull_backoff_max": 0.01}))
    monkeypatch.setenv("DEPLOYER_HOST_CONFIG", str(host_config))
    host = _Host()
    monkeypatch.setattr(AGENT, "run", host)
    monkeypatch.setattr(AGENT.Host, "listening", lambda _self: True)
    argv = {**VALID_ARGV, "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/web@sha256:" + "a" * 64,
            "registryLogin": "ecr", "envFile": str(env_file)}
    flags = {"app": "--app", "image": "--image", "release": "--release", "containerPort": "--port",
             "healthPath": "--health-path", "healthTimeout": "--health-timeout", "envFile": "--env-file",
             "dockerOptions": "--docker-options", "logDriver": "--log-driver", "logOptions": "--log-options",
             "retain": "--retain", "registryLogin": "--registry-login"}
    # When a swap runs and the pull fails
    code = AGENT.main(["swap", *(f"{flags[k]}={v}" for k, v in argv.items())])
    out, err = capsys.readouterr()
    # Then the token was fetched by the host at run time (the instance role's credentials)
    assert ["aws", "ecr", "get-login-password", "--region", "us-east-1"] in [c for c, _ in host.calls]
    # and given to docker login on stdin, never as an argument
    logins = [(c, s) for c, s in host.calls if c[:2] == ["docker", "login"]]
    assert logins
    assert all(s == TOKEN and "--password-stdin" in c for c, s in logins)
    assert not any(TOKEN in part for c, _ in host.calls for part in c)
    # and it is in neither the command output (summary on stdout) nor the logs (stderr)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failure_class"] == "pull"
    assert code != 0
    assert TOKEN not in out
    assert TOKEN not in err
    # and the env file's content was never read into anything the agent printed or passed
    assert ENV_SECRET not in out + err
    for command, stdin in host.calls:
        assert "pl4nted-env" not in (stdin or "") + " ".join(command)


# ------------------------------------------------------------------ the release's pinned secrets
PLANTED = "pl4nted-rel3ase-s3cret"


def _agent_runs(host: HostSandbox, *runs: tuple[str, list[str]]) -> list[tuple[list[str], int, str]]:
    """Each run's argv, exit code and everything it printed (stdout summary + stderr logs)."""
    results = []
    for mode, args in runs:
        proc = host.start_agent(mode, args)
        out, err = proc.communicate(timeout=180)
        results.append(([mode, *args], proc.returncode, out + err))
    return results


def _files_under(root: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode(errors="replace") for p in root.rglob("*") if p.is_file()}


@pytest.mark.integration
def test_planted_release_secrets_reach_only_the_container_s_environment(
        make_host: Callable[..., HostSandbox],  # noqa: F811 - the host tests' fixtures
        publish: Callable[..., AppImage],  # noqa: F811
        secret_store: SecretStore,  # noqa: F811
) -> None:
    # Given distinctive values in several versions of a parameter and a secret
    p_versions = secret_store.parameter("/web/planted", PLANTED + "-ssm-v1", PLANTED + "-ssm-v2",
                                        PLANTED + "-ssm-latest")
    s_versions = secret_store.secret("web/planted", PLANTED + "-sm-v1", PLANTED + "-sm-latest")
    host = make_host(**secret_store.host_settings())
    first, second = publish(1), publish(2)

    def pinned(ssm_version: str, sm_version: str, *extra: dict[str, str]) -> str:
        return release_config({"MODE": "planted-test"}, [
            {"var": "DB_PASSWORD", "from": "ssm", "id": "/web/planted", "version": ssm_version},
            {"var": "API_KEY", "from": "secretsmanager", "id": "web/planted", "version": sm_version},
            *extra])

    missing = {"var": "GONE", "from": "ssm", "id": "/web/never-created", "version": "1"}
    # When release 1 and 2 go live, a release 3 fails on a missing secret, and status and
    # diagnose are read
    runs = _agent_runs(
        host,
        ("swap", host.swap_args(APP, first.reference, 1,
                                release_config=pinned(p_versions[0], s_versions[0]))),
        ("swap", host.swap_args(APP, second.reference, 2,
                                release_config=pinned(p_versions[1], s_versions[0]))),
        ("swap", host.swap_args(APP, first.reference, 3,
                                release_config=pinned(p_versions[2], s_versions[1], missing))),
        ("status", [f"--app={APP}"]),
        ("diagnose", [f"--app={APP}"]),
    )
    assert [code for _, code, _ in runs] == [0, 0, 8, 0, 0], runs
    # Then the live container's environment holds the pinned versions' values (not the latest)
    live = host.state(APP)["container"]
    seen = container_env(live)
    assert (seen["DB_PASSWORD"], seen["API_KEY"]) == (PLANTED + "-ssm-v2", PLANTED + "-sm-v1")
    # and so does its env file, 0600, the only file of the host that holds any of them
    env_files = {str(Path(host.config["state_dir"]) / "env.d" / (live + ".env"))}
    files = _files_under(host.root)
    holding = {path for path, text in files.items() if PLANTED in text}
    assert holding == env_files
    assert (Path(next(iter(env_files))).stat().st_mode & 0o777) == 0o600
    # and none of them is in any agent's argv (decoded too), output or logs
    for argv, _, printed in runs:
        sent = " ".join(argv) + " ".join(base64.b64decode(a.split("=", 1)[1]).decode()
                                         for a in argv if a.startswith("--release-config="))
        assert PLANTED not in sent + printed, argv[:2]
    # nor in what docker keeps about the container besides its environment
    info = json.loads(subprocess.run(["docker", "inspect", live], capture_output=True, text=True,
                                     check=True).stdout)[0]
    outside_env = {**info, "Config": {k: v for k, v in info["Config"].items() if k != "Env"}}
    assert PLANTED not in json.dumps(outside_env)
