"""Hostile release configs: whatever arrives in `--release-config` (a hand-made SendCommand, a
corrupted pointer), the agent either refuses it as an input failure before touching anything, or
accepts only names, ids and versions of the documented shapes, fetches each secret as one argv
element and writes nothing but the container's env file inside its env directory."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.security.test_injection import AGENT, ATTACKS, VALID_ARGV, _Runner

pytestmark = pytest.mark.unit

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MARK = "QZX9MARK"  # planted in every value, id and version: never repeated in a refusal
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
FLAGS = {"app": "--app", "image": "--image", "release": "--release", "containerPort": "--port",
         "healthPath": "--health-path", "healthTimeout": "--health-timeout", "envFile": "--env-file",
         "dockerOptions": "--docker-options", "logDriver": "--log-driver", "logOptions": "--log-options",
         "retain": "--retain", "registryLogin": "--registry-login"}
UUID = "0f8e6d2c-1b3a-4c5d-9e8f-7a6b5c4d3e2f"


def _spliced(valid: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(valid),
        st.builds(lambda head, attack, tail: head + attack + tail, st.sampled_from(["", valid, valid[:2]]),
                  st.sampled_from(ATTACKS), st.sampled_from(["", valid])),
        st.text(max_size=30),
    )


names = _spliced("DB_PASSWORD")
values = st.one_of(st.just(MARK + "-value"), _spliced(MARK + "-value"))
ids = st.one_of(st.sampled_from(["/web/db", "web/api", "arn:aws:ssm:us-east-1:123456789012:parameter/web/db",
                                 "arn:aws:secretsmanager:eu-west-1:123456789012:secret:web/api-AbCdEf"]),
                _spliced("/web/" + MARK))
versions = st.one_of(st.sampled_from(["3", UUID]), _spliced("7" + MARK))
secret = st.one_of(
    st.fixed_dictionaries({"var": names, "from": st.sampled_from(["ssm", "secretsmanager", "s3", ""]),
                           "id": ids, "version": versions}),
    st.dictionaries(st.sampled_from(["var", "from", "id", "version", "value"]),
                    st.one_of(values, st.integers())),
)
config = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 0, 2, "1", True, None, 1.0])},
    optional={"environment": st.one_of(st.dictionaries(names, values, max_size=4),
                                       st.lists(values, max_size=2)),
              "secrets": st.one_of(st.lists(secret, max_size=3), st.just({"var": "X"})),
              "extra": values},
)


def _encode(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


releaseconfigs = st.one_of(
    config.map(_encode),
    config.map(lambda d: _encode(d)[:-2]),  # truncated base64
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
)


valid_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
valid_values = st.text(st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)),
                       max_size=20)
valid_secrets = st.one_of(
    st.fixed_dictionaries({"var": valid_names, "from": st.just("ssm"),
                           "id": st.from_regex(r"/?[A-Za-z0-9_.-]{1,10}(/[A-Za-z0-9_.-]{1,10}){0,2}",
                                               fullmatch=True),
                           "version": st.from_regex(r"[1-9][0-9]{0,5}", fullmatch=True)}),
    st.fixed_dictionaries({"var": valid_names, "from": st.just("secretsmanager"),
                           "id": st.from_regex(r"[A-Za-z0-9/_+=.@-]{1,20}", fullmatch=True),
                           "version": st.from_regex(r"[A-Za-z0-9-]{32,40}", fullmatch=True)}),
)
valid_configs = st.builds(
    lambda env, secrets: {"v": 1, "environment": env, "secrets": secrets},
    st.dictionaries(valid_names, valid_values, max_size=3), st.lists(valid_secrets, max_size=3),
).filter(lambda d: len({*d["environment"], *(s["var"] for s in d["secrets"])})
         == len(d["environment"]) + len(d["secrets"]))


def _accepted_shapes(decoded: dict[str, Any]) -> None:
    for name, value in decoded["environment"]:
        assert NAME.fullmatch(name), name
        assert not set(value) & {"\n", "\r", "\x00"}
    seen = [n for n, _ in decoded["environment"]]
    for entry in decoded["secrets"]:
        assert set(entry) == {"var", "from", "id", "version"}
        assert NAME.fullmatch(entry["var"])
        assert entry["from"] in ("ssm", "secretsmanager")
        assert re.fullmatch(r"[A-Za-z0-9_.:/+=@-]{1,2048}", entry["id"]), entry["id"]
        assert re.fullmatch(r"[1-9][0-9]{0,18}" if entry["from"] == "ssm" else r"[A-Za-z0-9-]{32,64}",
                            entry["version"])
        seen.append(entry["var"])
    assert len(seen) == len(set(seen)), "a variable set twice"


@PROPERTY
@given(text=releaseconfigs)
@example(text=_encode({"v": 1, "environment": {"A": MARK + "\nB=1"}}))
@example(text=_encode({"v": 1, "secrets": [{"var": "A", "from": "ssm", "id": "/x;" + MARK, "version": "1"}]}))
@example(text=_encode({"v": 1, "environment": {"A": "1"}, "secrets": [
    {"var": "A", "from": "ssm", "id": "/x", "version": "1"}]}))
def test_a_release_config_is_refused_naming_its_field_or_accepted_in_the_documented_shapes(text: str) -> None:
    refusal = ""
    try:
        decoded = AGENT.decode_release_config(text)
    except AGENT.ConfigInvalid as exc:
        refusal = str(exc)
    if refusal:
        # refused: the message names the flag and its field, never a value
        assert refusal.startswith("--release-config")
        assert MARK not in refusal
        return
    _accepted_shapes(decoded)


def _argv(release_config: str) -> list[str]:
    return ["swap", *(f"{FLAGS[k]}={v}" for k, v in VALID_ARGV.items()), "--release-config=" + release_config]


@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=releaseconfigs)
def test_an_invalid_release_config_is_an_input_failure_that_runs_nothing_and_writes_nothing(
        text: str, monkeypatch_module: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        AGENT.decode_release_config(text)
    except AGENT.ConfigInvalid:
        pass
    else:
        return  # accepted: the next test follows it onto the host
    with tempfile.TemporaryDirectory() as root:
        host_config = Path(root) / "host.json"
        host_config.write_text(json.dumps({"state_dir": str(Path(root) / "state")}))
        runner = _Runner()
        monkeypatch_module.setenv("DEPLOYER_HOST_CONFIG", str(host_config))
        monkeypatch_module.setattr(AGENT, "run", runner)
        code = AGENT.main(_argv(text))
        out, err = capsys.readouterr()
        summary = json.loads(out.strip().splitlines()[-1])
        assert (code, summary["failure_class"]) == (2, "input")
        assert "--release-config" in summary["message"]
        assert MARK not in out + err
        assert runner.calls == []
        assert sorted(p.name for p in Path(root).iterdir()) == ["host.json"]


class _SecretStore(_Runner):
    """The AWS CLI's answers for any pinned secret: a value naming the variable's argv element."""

    def __call__(self, cmd: list[str], timeout: float = 120, stdin: str | None = None) -> Any:
        super().__call__(cmd, timeout, stdin)
        selector = next(a for a in cmd if a.startswith(("--name=", "--secret-id=")))
        if cmd[1] == "ssm":
            version = selector.rsplit(":", 1)[1]
            answer: dict[str, Any] = {"Parameter": {"Value": "fetched " + selector, "Version": int(version)}}
        else:
            version = next(a for a in cmd if a.startswith("--version-id=")).split("=", 1)[1]
            answer = {"SecretString": "fetched " + selector, "VersionId": version}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(answer), "")


@PROPERTY
@given(text=valid_configs.map(_encode))
@example(text=_encode({"v": 1, "environment": {"MODE": "x y=z"}, "secrets": [
    {"var": "DB", "from": "ssm", "id": "arn:aws:ssm:us-east-1:123456789012:parameter/web/db", "version": "3"},
    {"var": "API", "from": "secretsmanager", "id": "-web/api", "version": UUID}]}))
def test_an_accepted_release_config_fetches_each_secret_as_one_argv_element_and_writes_only_its_env_file(
        text: str, monkeypatch_module: pytest.MonkeyPatch) -> None:
    decoded = AGENT.decode_release_config(text)
    with tempfile.TemporaryDirectory() as root:
        store = _SecretStore()
        monkeypatch_module.setattr(AGENT, "run", store)
        config = {**AGENT.HOST_DEFAULTS, "state_dir": str(Path(root) / "state"), "host_id": "h1",
                  "aws_command": ["aws"], "region": "us-east-1"}
        args = AGENT.checked_args(_argv(text))
        agent = AGENT.Agent(config, args)
        # When the swap fetches the release's config and writes the new container's env file
        agent.fetch_config()
        name = agent.container_name("blue")
        path = agent.host.write_env_file(name, agent.env_entries)
        # Then each secret was one get call whose id and version are single argv elements
        assert len(store.calls) == len(decoded["secrets"])
        for (cmd, stdin), entry in zip(store.calls, decoded["secrets"], strict=True):
            assert stdin is None
            if entry["from"] == "ssm":
                assert cmd[1:3] == ["ssm", "get-parameter"]
                assert "--name=" + entry["id"] + ":" + entry["version"] in cmd
            else:
                assert cmd[1:3] == ["secretsmanager", "get-secret-value"]
                assert {"--secret-id=" + entry["id"], "--version-id=" + entry["version"]} <= set(cmd)
        # and the only file written is the env file, inside the env directory, one line per variable
        written = [p for p in Path(root).rglob("*") if p.is_file()]
        assert written == [path]
        assert path.parent == Path(root) / "state" / "env.d"
        # docker splits an env file on "\n" only (form feeds and the like stay in a value)
        lines = path.read_text(encoding="utf-8").split("\n")
        assert lines.pop() == ""
        assert [line.split("=", 1)[0] for line in lines] == (
            [n for n, _ in decoded["environment"]] + [s["var"] for s in decoded["secrets"]])
        assert (path.stat().st_mode & 0o777) == 0o600


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch
