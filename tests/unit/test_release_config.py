"""Hostile input for the app config's `environment` and `secrets`: what is valid reaches the swap
command unchanged, anything else is refused naming the field, and nothing reaches the swap
parameters or the user data unescaped."""

from __future__ import annotations

import base64
import json
import re
import shlex
import string
from typing import Any

import pytest
from deployer import builders
from deployer.agent_contract import PARAMETER_PATTERNS
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig
from deployer.models.release_config import RELEASE_CONFIG_BUDGET, pin
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.conftest import WEB_CONFIG, make_release

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/team/web@{DIGEST}"
NAME_RE = r"[A-Za-z_][A-Za-z0-9_]{0,127}"


def config(**changes: Any) -> AppConfig:
    return AppConfig.parse({**WEB_CONFIG, "launch_template": "lt-0123456789abcdef0", **changes})


def sent_release_config(cfg: AppConfig, versions: dict[str, str]) -> str:
    """The `releaseConfig` the swap command carries for a release of `cfg` pinned at `versions`."""
    release = make_release(7, image=IMAGE, digest=DIGEST, tag="v1").model_copy(
        update={"config": pin(cfg.environment, cfg.secret_refs, versions)}
    )
    (value,) = builders.swap_parameters(cfg, release)["releaseConfig"]
    return value


def decoded(value: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(value, validate=True).decode("utf-8"))
    return data


def refused(field: str, **changes: Any) -> str:
    with pytest.raises(InvalidAppConfig) as caught:
        config(**changes)
    message = str(caught.value)
    assert field in message, message
    return message


names = st.from_regex(rf"\A{NAME_RE}\Z", fullmatch=True).filter(lambda n: len(n) <= 40)
# Any printable text a line-based env file can carry: no control character, surrogate or line separator.
values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
    max_size=60,
)
ssm_segment = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z", fullmatch=True).filter(
    lambda s: s[:3].lower() not in ("aws", "ssm")
)
ssm_names = st.one_of(
    ssm_segment,
    st.lists(st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z", fullmatch=True), min_size=1, max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
).filter(lambda n: n.lstrip("/")[:3].lower() not in ("aws", "ssm"))
secret_names = st.from_regex(r"\A[A-Za-z0-9/_+=.@-]{1,40}\Z", fullmatch=True)
references = st.one_of(
    ssm_names.map(lambda n: f"ssm:{n}"),
    secret_names.map(lambda n: f"secretsmanager:{n}"),
    ssm_names.filter(lambda n: n.startswith("/")).map(
        lambda n: f"arn:aws:ssm:eu-west-1:123456789012:parameter{n}"
    ),
    st.tuples(secret_names, st.from_regex(r"\A[A-Za-z0-9]{6}\Z", fullmatch=True)).map(
        lambda t: f"arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:{t[0]}-{t[1]}"
    ),
)
versions = st.one_of(st.integers(1, 10**18).map(str), st.uuids().map(str))


@given(
    environment=st.dictionaries(names, values, max_size=6),
    secrets=st.dictionaries(names, st.tuples(references, versions), max_size=4),
)
def test_valid_environment_and_secrets_reach_the_swap_command_unchanged(
    environment: dict[str, str], secrets: dict[str, tuple[str, str]]
) -> None:
    # Given a config with valid variables and secret references (no name in both)
    secrets = {k: v for k, v in secrets.items() if k not in environment}
    cfg = config(environment=environment, secrets={k: ref for k, (ref, _) in secrets.items()})

    # When a release pinned at some versions is sent
    value = sent_release_config(cfg, {k: version for k, (_, version) in secrets.items()})

    # Then the parameter passes the document's pattern and decodes to exactly what was configured
    assert re.fullmatch(PARAMETER_PATTERNS["releaseConfig"], value)
    if not environment and not secrets:
        assert value == ""
        return
    sent = decoded(value)
    assert sent["v"] == 1
    assert sent["environment"] == environment
    pinned = {s["var"]: s for s in sent["secrets"]}
    assert set(pinned) == set(secrets)
    for var, (ref, version) in secrets.items():
        source, _, name = ref.partition(":")
        if ref.startswith("arn:"):
            source, name = ref.split(":")[2], ref
        assert pinned[var] == {"var": var, "from": source, "id": name, "version": version}


@given(name=st.text(max_size=140))
def test_a_variable_name_outside_the_pattern_is_refused_naming_it(name: str) -> None:
    assume(not re.fullmatch(NAME_RE, name))
    # Given a bad name under environment, then under secrets: each error names the field
    refused("environment", environment={name: "x"})
    refused("secrets", secrets={name: "ssm:/web/key"})


@given(
    before=values,
    bad=st.characters(whitelist_categories=("Cc", "Zl", "Zp")),
    after=values,
)
def test_a_value_with_a_control_character_or_line_break_is_refused(before: str, bad: str, after: str) -> None:
    # Given a value that would split docker's env-file line (or smuggle a terminal escape)
    message = refused("environment.GREETING", environment={"GREETING": before + bad + after})
    # Then the message says which character, not the value itself
    assert f"U+{ord(bad):04X}" in message


@given(reference=st.text(max_size=120))
def test_anything_but_a_known_reference_form_is_refused(reference: str) -> None:
    known = r"(ssm|secretsmanager):[A-Za-z0-9/_+=.@-]+|arn:[a-z-]+:(ssm|secretsmanager):.*"
    assume(not re.fullmatch(known, reference))
    refused("secrets.API_KEY", secrets={"API_KEY": reference})


@pytest.mark.parametrize(
    "reference",
    [
        "ssm:",
        "ssm:web/key",  # a hierarchy starts with `/`
        "ssm:/aws/service/ami",  # reserved prefix
        "ssm:SSM-key",
        "ssm:/a b",
        "ssm:/" + "/".join("l" * 16),  # 16 levels
        "secretsmanager:",
        "secretsmanager:web key",
        "secretsmanager:web$(id)",
        "secretsmanager:" + "k" * 513,
        "arn:aws:ssm:us-east-1:123456789012:parameter",
        "arn:aws:ssm:us-east-1:1234:parameter/web/key",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:web/api-key",  # no random suffix
        "arn:aws:s3:::bucket/key",
        "vault:secret/web",
        "/web/key",
    ],
)
def test_malformed_references_are_refused(reference: str) -> None:
    refused("secrets.API_KEY", secrets={"API_KEY": reference})


def test_a_variable_in_environment_and_secrets_is_refused() -> None:
    refused("secrets.API_KEY", environment={"API_KEY": "plain"}, secrets={"API_KEY": "ssm:/web/key"})


def test_a_config_that_could_not_fit_the_pointer_is_refused_at_config_time() -> None:
    # Given environment values that fit their own bounds but together exceed the budget
    environment = {f"V{i}": "x" * 600 for i in range(4)}
    message = refused("environment and secrets", environment=environment)
    assert str(RELEASE_CONFIG_BUDGET) in message


def test_the_budget_counts_each_secret_at_its_longest_version() -> None:
    # Given a config just under the budget with short values, and secrets whose versions could be long
    secrets = {f"S{i}": f"secretsmanager:web/{'k' * 60}{i}" for i in range(20)}
    refused("environment and secrets", secrets=secrets)
    # And the same secrets fewer in number fit
    config(secrets=dict(list(secrets.items())[:10]))


def test_a_release_without_config_sends_an_empty_parameter() -> None:
    assert sent_release_config(config(), {}) == ""


@given(environment=st.dictionaries(names, values, min_size=1, max_size=4))
def test_user_data_carries_the_release_config_as_one_literal_argument(environment: dict[str, str]) -> None:
    # Given a release with plain variables (any printable characters, quotes and `$` included)
    cfg = config(environment=environment)
    release = make_release(7, image=IMAGE, digest=DIGEST, tag="v1").model_copy(
        update={"config": pin(cfg.environment, {}, {})}
    )

    # When its boot script is built
    script = builders.user_data(cfg, release, "deployer-swap", "/deployer/web/release", "us-east-1")

    # Then the agent's command line parses back into one --release-config argument that decodes
    # to the environment, in base64 characters only
    (line,) = [entry for entry in script.splitlines() if "agent.py boot" in entry]
    argv = shlex.split(line.split(" >>", 1)[0])
    (arg,) = [a for a in argv if a.startswith("--release-config=")]
    assert decoded(arg.removeprefix("--release-config="))["environment"] == environment
    assert set(arg.removeprefix("--release-config=")) <= set(string.ascii_letters + string.digits + "+/=")
