"""The playground: `make up` leaves a local cloud running, the `deployer` CLI works against it from
the environment `.localcloud/env` gives, a `docker push` deploys like an ECR push, and
`make down` leaves nothing behind. One playground directory for the module (a temporary one, so
a developer's own playground is untouched). `make up` is the expensive part, so the playground is
shared, but no test relies on what another did to it: each asks the `playground` fixture for the
state it starts from (up; as `make up` left it; a broken release deployed), which the fixture
reads back and, when the playground is not in that state, brings it to (`make up` again after a
test took it down, `make down` + `make up` when a test needs it untouched)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from deployer.cli.context import CLI_CONFIG
from deployer.cli.stack import resolved_environment
from deployer.settings import Settings

from localcloud.aws.host_role import grant_host_secrets
from localcloud.hosts.images import build_app_image, remove_images
from localcloud.stories.playground import APP, paths, read_env
from tests.e2e.conftest import docker_ready

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER = str(Path(sys.executable).parent / "deployer")


def stack_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the stack's names read from its outputs, as the CLI reads them."""
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    endpoint = env["AWS_ENDPOINT_URL"]
    return resolved_environment(argparse.Namespace(stack=None), env, session, endpoint, CLI_CONFIG)


def make(target: str, state: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCALCLOUD_PLAYGROUND_DIR": str(state)}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target, "BOOTSTRAPPED=1"],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


class Playground:
    """The module's playground, brought to the state a test starts from."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.made: list[tuple[Any, ...]] = []  # the history as `make up` left it

    def up(self) -> Path:
        """The playground is up (started unless it is)."""
        if not self.answers():
            started = make("up", self.state)
            assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
            self.made = self.rows()
        return self.state

    def answers(self) -> bool:
        """Its env file is there and its endpoint takes connections (`playground.healthy` asks the
        endpoint for all of moto's data, most of a second per test)."""
        env = paths(self.state)["env"]
        if not env.exists():
            return False
        endpoint = urllib.parse.urlsplit(read_env(env).get("AWS_ENDPOINT_URL", ""))
        address = (endpoint.hostname or "127.0.0.1", endpoint.port or 80)
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            return False
        return True

    def env(self) -> dict[str, str]:
        """A shell after `source .localcloud/env`, with nothing of the caller's AWS setup."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**base, **read_env(paths(self.up())["env"]), "COLUMNS": "200"}

    def rows(self) -> list[tuple[Any, ...]]:
        """(release, tag, status, source) of every release of the app, read from the releases
        table directly (in-process: the CLI costs a second per call, and the fixture asks often)."""
        env = stack_env(self.env())
        ddb = boto3.client(
            "dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        items = ddb.query(
            TableName=env["RELEASES_TABLE"], KeyConditionExpression="app = :a",
            ExpressionAttributeValues={":a": {"S": APP}},
        )["Items"]
        plain = [{k: next(iter(v.values())) for k, v in item.items()} for item in items]
        return sorted((int(r["release"]), r.get("tag"), r.get("status"), r.get("source")) for r in plain)

    def as_made(self) -> dict[str, str]:
        """Up, and nothing deployed since `make up`."""
        return self.fresh_unless(lambda rows: rows == self.made)

    def fresh_unless(self, wanted: Callable[[list[tuple[Any, ...]]], bool]) -> dict[str, str]:
        """Up, with a history that is `wanted`; a fresh playground (down, up) when it is not."""
        self.up()
        if not wanted(self.rows()):
            self.down()
            self.up()
        return self.env()

    def with_broken_deployed(self) -> dict[str, str]:
        """Up, with the broken image deployed once (and rolled back)."""
        env = self.env()
        if all(row[1] != "broken" for row in self.rows()):
            proc = deployer(env, "deploy", APP, "--tag", "broken", "--wait")
            assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr
        return env

    def without_tag(self, tag: str) -> dict[str, str]:
        """Up, and no release of `tag` yet."""
        return self.fresh_unless(lambda rows: all(row[1] != tag for row in rows))

    def down(self) -> None:
        make("down", self.state)


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    if not docker_ready():
        pytest.fail("the e2e tests need the Docker engine and nginx (tools/services.sh start)")
    pg = Playground(tmp_path_factory.mktemp("playground") / ".localcloud")
    try:
        yield pg
    finally:
        pg.down()


@pytest.fixture
def state(playground: Playground) -> Path:
    """The playground's directory, the playground up."""
    return playground.up()


@pytest.fixture
def shell_env(playground: Playground) -> dict[str, str]:
    """A shell after `source .localcloud/env` of the playground, up."""
    return playground.env()


@pytest.fixture
def as_made_env(playground: Playground) -> dict[str, str]:
    """The shell of a playground as `make up` left it: nothing deployed since."""
    return playground.as_made()


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
    # Only the stack's name: the CLI reads the outputs itself
    assert shell_env["DEPLOYER_STACK"] == "deployer"
    assert "APPS_TABLE" not in shell_env
    assert shell_env["DEPLOYER_ROLLBACK_FUNCTION"]
    assert shell_env["DEPLOYER_LOCAL_REGISTRY"].startswith("127.0.0.1:")
    resolved = stack_env(shell_env)
    settings = Settings.from_env(resolved)
    assert settings.apps_table.startswith("deployer-AppsTable-")
    assert resolved["DEPLOYER_DIAGNOSE_DOCUMENT"]
    # The same outputs the AWS CLI reads from CloudFormation
    out = subprocess.run(
        ["aws", "cloudformation", "describe-stacks", "--stack-name", "deployer",
         "--query", "Stacks[0].Outputs[?OutputKey=='AppsTableName'].OutputValue", "--output", "text"],
        env=shell_env, capture_output=True, text=True, check=True, timeout=120,
    )
    assert out.stdout.strip() == settings.apps_table


def test_status_shows_web_on_v1_on_three_hosts_without_drift(as_made_env: dict[str, str]) -> None:
    proc = deployer(as_made_env, "--json", "status", APP)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["app"] == APP
    assert view["current"]["tag"] == "v1"
    assert len(view["hosts"]) == 3
    assert all(h["release"] == view["current"]["release"] for h in view["hosts"])
    assert not view["drift"]
    assert view["launch_template"]["in_sync"]


def test_the_hosts_booted_and_took_v1_with_no_call_refused_by_their_role_or_a_functions(
    playground: Playground, as_made_env: dict[str, str]
) -> None:
    # Given the playground as `make up` left it: three hosts booted and on v1, every host call
    # made through the hosts' gate and every function call under its own role
    roles = paths(playground.state)["cloud"] / "roles"
    assert (roles / "OnImagePushFunction.json").exists()  # where the cloud keeps both records

    # Then neither record holds a refused call
    refused = {name: (roles / name).read_text() for name in ("host-denied.log", "denied.log")
               if (roles / name).exists()}
    assert all(text == "" for text in refused.values()), refused


def test_history_has_v1_succeeded_and_the_broken_push_not_deployed(as_made_env: dict[str, str]) -> None:
    rows = history(as_made_env)
    assert [(r["tag"], r["status"]) for r in rows] == [("v1", "SUCCEEDED")]
    assert rows[0]["source"] == "push"


@pytest.mark.parametrize(
    ("case", "args", "env_change"),
    [
        ("unknown app", ["status", "nope"], {}),
        ("unreachable endpoint", ["--endpoint-url", "http://127.0.0.1:9", "status", APP], {}),
        ("no credentials", ["status", APP],
         {"drop": "AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN"}),
        ("unknown stack", ["--stack", "nope", "status", APP], {}),
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


def test_a_docker_push_to_the_local_registry_deploys_like_an_ecr_push(
    playground: Playground,
) -> None:
    # Given a playground where web:v2 was never pushed
    shell_env = playground.without_tag("v2")
    # and an image pushed with docker to $DEPLOYER_LOCAL_REGISTRY/web:v2
    local = "localcloud/stories/playground-test:v2"
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


def test_wait_digest_right_after_a_docker_push_follows_that_push_and_exits_2_when_it_rolls_back(
    playground: Playground,
) -> None:
    # Given a playground where web:v9 was never pushed, and an image whose health check fails
    shell_env = playground.without_tag("v9")
    local = "localcloud/stories/playground-test:v9"
    image_id = build_app_image(local, 9, kind="broken", app=APP)
    remote = f"{shell_env['DEPLOYER_LOCAL_REGISTRY']}/{APP}:v9"
    try:
        subprocess.run(["docker", "tag", local, remote], check=True, capture_output=True)
        # When CI pushes it and, at once, waits for its digest as the README's snippet does
        subprocess.run(["docker", "push", "-q", remote], check=True, capture_output=True, timeout=120)
        digest = subprocess.run(
            ["sh", "-c", f"docker inspect --format '{{{{index .RepoDigests 0}}}}' {remote} | cut -d@ -f2"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        proc = deployer(shell_env, "--json", "wait", APP, "--digest", digest, "--timeout", "240")
    finally:
        subprocess.run(["docker", "rmi", remote], check=False, capture_output=True)
        remove_images([image_id])

    # Then it followed the release of that push (not the one before it) and exits 2: rolled back
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr
    result = json.loads(proc.stdout)
    pushed = [r for r in history(shell_env) if r["tag"] == "v9"]
    assert [r["release"] for r in pushed] == [result["release"]]
    assert pushed[0]["digest"] == digest
    assert result["verdict"] == "failed and rolled back"
    assert result["status"] == "ROLLED_BACK"


def test_deploy_wait_of_the_broken_image_exits_2_and_names_the_health_failure(
    shell_env: dict[str, str],
) -> None:
    # Given the app on a good release
    before = json.loads(deployer(shell_env, "--json", "status", APP).stdout)["current"]["tag"]
    assert before != "broken"
    # When the broken image is deployed by name
    proc = deployer(shell_env, "deploy", APP, "--tag", "broken", "--wait")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr
    assert "health" in (proc.stdout + proc.stderr).lower()
    status = json.loads(deployer(shell_env, "--json", "status", APP).stdout)
    assert status["current"]["tag"] == before  # back on the last good release


def test_logs_show_the_swap_output_and_the_app_containers_lines(playground: Playground) -> None:
    # Given the broken image deployed once: its container wrote why it is broken
    shell_env = playground.with_broken_deployed()
    # Then the forwarder shipped that line as awslogs would
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


def test_doctor_against_the_playground_says_ok_to_every_check(shell_env: dict[str, str]) -> None:
    proc = deployer(shell_env, "--json", "doctor", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert {c["status"] for c in report["checks"]} == {"ok"}, report["checks"]
    names = [c["check"] for c in report["checks"]]
    for expected in ("stack", "concurrency", f"app {APP} group", f"app {APP} repository",
                     f"app {APP} instances", f"app {APP} host role", "event rules"):
        assert expected in names


def test_doctor_fails_the_host_role_without_get_document_and_names_the_fix(
    shell_env: dict[str, str],
) -> None:
    # Given the hosts' role with the stack's host policy's grants but ssm:GetDocument, and no
    # AmazonSSMManagedInstanceCore (which grants it on *)
    iam = boto3.client(
        "iam",
        region_name=shell_env["AWS_REGION"],
        endpoint_url=shell_env["AWS_ENDPOINT_URL"],
        aws_access_key_id=shell_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=shell_env["AWS_SECRET_ACCESS_KEY"],
    )
    role = "deployer-host"
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    host_policy = next(a for a in attached if "HostPolicy" in a)
    version = iam.get_policy(PolicyArn=host_policy)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=host_policy, VersionId=version)["PolicyVersion"]["Document"]
    document = document if isinstance(document, dict) else json.loads(urllib.parse.unquote(document))
    kept = [s for s in document["Statement"] if s["Action"] != "ssm:GetDocument"]
    lacking = {**document, "Statement": kept}
    for arn in attached:
        iam.detach_role_policy(RoleName=role, PolicyArn=arn)
    iam.put_role_policy(RoleName=role, PolicyName="no-get-document", PolicyDocument=json.dumps(lacking))
    try:
        # When doctor runs
        proc = deployer(shell_env, "--json", "doctor", timeout=180)
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName="no-get-document")
        for arn in attached:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)

    # Then it fails, and the host-role check names ssm:GetDocument and the fix
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [check] = [c for c in json.loads(proc.stdout)["checks"] if c["check"] == f"app {APP} host role"]
    assert check["status"] == "fail"
    assert "ssm:GetDocument" in check["detail"]
    assert "HostPolicy" in check["fix"]


# ------------------------------------------------------------------ config, secrets and the release task
def _clients(env: dict[str, str], *services: str) -> list[Any]:
    return [
        boto3.client(
            service,
            region_name=env["AWS_REGION"],
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        for service in services
    ]


def _put_config(env: dict[str, str], tmp_path: Path, change: dict[str, Any], *flags: str) -> None:
    """The app's stored config with `change` applied (a None value removes the field), put back
    with `deployer config put` as an operator would from the app's repository."""
    stored = json.loads(deployer(env, "--json", "app", "get", APP).stdout)
    for field, value in change.items():
        if value is None:
            stored.pop(field, None)
        else:
            stored[field] = value
    path = tmp_path / f"deploy-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(stored))
    proc = deployer(env, "config", "put", APP, str(path), *flags, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


def _hosts(env: dict[str, str]) -> list[dict[str, Any]]:
    view = json.loads(deployer(env, "--json", "status", APP).stdout)
    hosts: list[dict[str, Any]] = view["hosts"]
    return hosts


def _containers(env: dict[str, str]) -> dict[str, str]:
    """Each playground host's running container of the app: host id -> container id."""
    found = {}
    for host in _hosts(env):
        out = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=deployer.host={host['instance_id']}",
             "--filter", f"label=deployer.app={APP}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert len(out) == 1, (host, out)
        found[host["instance_id"]] = out[0]
    return found


def _seen(env: dict[str, str], *names: str) -> set[tuple[str, ...]]:
    """The values of `names` that every host's app container sees (one tuple per distinct set)."""
    seen = set()
    for container in _containers(env).values():
        out = subprocess.run(["docker", "exec", container, "/bin/busybox", "env"],
                             capture_output=True, text=True, check=True).stdout
        variables = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        seen.add(tuple(variables.get(name, "") for name in names))
    return seen


def test_a_config_change_deploys_and_a_rollback_restores_the_previous_secret_version(
    shell_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a SecureString parameter and a Secrets Manager secret, the hosts' role granted them
    # (README, "What the hosts need")
    ssm, sm, iam = _clients(shell_env, "ssm", "secretsmanager", "iam")
    ssm.put_parameter(Name="/web/db-password", Value="db-first", Type="SecureString", Overwrite=True)
    with contextlib.suppress(sm.exceptions.ResourceExistsException):
        sm.create_secret(Name="web/api-key", SecretString="api-first")
    sm.put_secret_value(SecretId="web/api-key", SecretString="api-first")
    grant_host_secrets(iam, parameter_names=["/web/db-password"], secret_names=["web/api-key"])
    # When the app's config file gains a variable and both secrets, and is put
    _put_config(shell_env, tmp_path, {
        "environment": {"GREETING": "hello"},
        "secrets": {"DB_PASSWORD": "ssm:/web/db-password", "API_KEY": "secretsmanager:web/api-key"},
    }, "--wait")
    # Then every host's container sees the variable and the secrets' current values
    names = ("GREETING", "DB_PASSWORD", "API_KEY")
    assert _seen(shell_env, *names) == {("hello", "db-first", "api-first")}

    # When both secrets get a new version and the config alone is deployed
    ssm.put_parameter(Name="/web/db-password", Value="db-second", Type="SecureString", Overwrite=True)
    sm.put_secret_value(SecretId="web/api-key", SecretString="api-second")
    proc = deployer(shell_env, "deploy", APP, "--config-only", "--wait", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert _seen(shell_env, *names) == {("hello", "db-second", "api-second")}

    # When the operator rolls back
    proc = deployer(shell_env, "rollback", APP, "--wait", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    # Then the containers see the previous release's pinned versions again, though the
    # secrets' current versions are the new ones
    assert _seen(shell_env, *names) == {("hello", "db-first", "api-first")}
    # and the history names the versions that changed, never a value
    rows = deployer(shell_env, "--json", "history", APP).stdout
    assert "DB_PASSWORD" in rows
    for value in ("db-first", "db-second", "api-first", "api-second"):
        assert value not in rows


def test_a_failing_migration_stops_a_release_before_any_host_switches(
    shell_env: dict[str, str], tmp_path: Path
) -> None:
    # Given the app with a release task that fails, as a migration whose table is missing does
    task = ["/bin/busybox", "sh", "-c", "echo migrating users; echo 'relation users does not exist'; exit 3"]
    _put_config(shell_env, tmp_path, {"release_task": task}, "--no-deploy")
    before = _containers(shell_env)
    releases_before = {h["instance_id"]: h["release"] for h in _hosts(shell_env)}
    pointer_before = json.loads(deployer(shell_env, "--json", "status", APP).stdout)["current"]["release"]
    local = "localcloud/stories/playground-test:v11"
    image_id = build_app_image(local, 11, app=APP)
    remote = f"{shell_env['DEPLOYER_LOCAL_REGISTRY']}/{APP}:v11"
    try:
        # When CI pushes a new image and waits for its release
        subprocess.run(["docker", "tag", local, remote], check=True, capture_output=True)
        subprocess.run(["docker", "push", "-q", remote], check=True, capture_output=True, timeout=120)
        digest = subprocess.run(
            ["docker", "inspect", "--format", "{{index .RepoDigests 0}}", remote],
            check=True, capture_output=True, text=True,
        ).stdout.strip().split("@")[1]
        proc = deployer(shell_env, "--json", "wait", APP, "--digest", digest, "--timeout", "240")
    finally:
        subprocess.run(["docker", "rmi", remote], check=False, capture_output=True)
        remove_images([image_id])
        _put_config(shell_env, tmp_path, {"release_task": None}, "--no-deploy")

    # Then the release FAILED with the task's exit code and last lines
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "FAILED", proc.stdout[-3000:]
    [release] = [r for r in history(shell_env) if r["digest"] == digest]
    assert release["reason"].startswith("release task failed (exit code 3)")
    assert "relation users does not exist" in release["reason"]
    # and no host switched: the same containers serve, on the same release, the pointer unmoved
    assert _containers(shell_env) == before
    assert {h["instance_id"]: h["release"] for h in _hosts(shell_env)} == releases_before
    status = json.loads(deployer(shell_env, "--json", "status", APP).stdout)
    assert status["current"]["release"] == pointer_before
    # and the task's output is in its logs
    logs = deployer(shell_env, "logs", APP, "--task", "--release", str(release["release"]))
    assert "migrating users" in logs.stdout, logs.stdout[-2000:] + logs.stderr
