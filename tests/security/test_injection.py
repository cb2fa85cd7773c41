"""Command injection is impossible: hostile values for every field that reaches a host, run through
the whole path a value takes.

    ECR event / app config (CLI) → pydantic model → swap parameters (checked against the
    deployable document's allowedPattern, as SSM does) → the agent's own parsing and validation
    (host/agent.py, imported, never run against docker) → the docker argv and nft script the agent
    builds (captured from its one process runner, nothing executed).

Each property counts its cases and where each was stopped; `HOSTILE_CASES` is printed at the end
of the module (run with -s) and the counts are asserted, so a property that ran nothing fails.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from deployer import builders
from deployer.admission import image_reference
from deployer.errors import InvalidAppConfig, InvalidEvent
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.records import Release
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import WEB_CONFIG, make_release, read_event, read_template

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
AGENT_PATH = ROOT / "host" / "agent.py"
CASES = 300
PROPERTY = settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What a shell would act on. No value that reaches a host may hold one.
SHELL_META = set("'\"$`;&|<>\n\r\\\t ()*?[]{}!#~\x00")
# Fragments an attacker would try: shell syntax, option smuggling, privilege changes.
ATTACKS = [
    "'",
    '"',
    "$",
    "`",
    ";",
    "&",
    "|",
    "<",
    ">",
    "\n",
    "\r",
    "\\",
    " ",
    "\t",
    "\x00",
    "$(reboot)",
    "`id`",
    "; rm -rf /",
    "&& curl x | sh",
    "' ; reboot ; '",
    "\n--privileged",
    " --privileged=true",
    "--network=host",
    "--volume=/:/host",
    "../../etc/passwd",
    "%0a",
    "\u2028",
    "é",
    "{{ app }}",
    "--security-opt=seccomp=unconfined",
    "--user=0",
    "-1",
    "unlimited",
    "=",
    ",",
    ":",
    "@",
    "/",
]
DANGEROUS_DOCKER_VALUES = [
    "seccomp=unconfined",
    "apparmor=unconfined",
    "label=disable",
    "label:disable",
    "systempaths=unconfined",
    "seccomp:unconfined",
    "no-new-privileges=false",
    "no-new-privileges:false",
    "privileged",
    "0",
    "0:0",
    "root",
    "1000:0",
    "-1",
    "memlock=-1",
    "rtprio=99",
    "nofile=-1",
    "/tmp:exec",
    "/tmp:suid",
    "/tmp:dev",
    "false",
    "deployer.digest=sha256:x",
]
DOCKER_NAMES = [
    "cpus",
    "cpu-shares",
    "memory",
    "memory-reservation",
    "memory-swap",
    "pids-limit",
    "shm-size",
    "ulimit",
    "user",
    "read-only",
    "tmpfs",
    "stop-timeout",
    "cap-drop",
    "security-opt",
    "label",
    "privileged",
    "cap-add",
    "network",
    "volume",
    "v",
    "device",
    "pid",
    "ipc",
    "userns",
    "mount",
    "security-opt ",
    "entrypoint",
    "env",
    "e",
    "add-host",
    "cgroup-parent",
    "sysctl",
]
# The judge of what an allowed option does to the host, by docker's reading of its name and
# value, never by substrings (a capability named "privileged", dropped, weakens nothing). An
# option weakens the host when it lifts a limit (0, -1, unlimited), runs as root (user or group
# 0, or a name that may map to it), relaxes confinement, lets the container lock memory or take
# real-time priority, or mounts with exec/suid/dev; an option outside the allow-list
# (privileged, cap-add, network, volume, device, label, ...) weakens it by being there.
LIMITS = {"cpus", "cpu-shares", "memory", "memory-reservation", "memory-swap", "pids-limit", "shm-size"}
LIMIT_VALUE = re.compile(r"([0-9]+([.][0-9]+)?)[bkmg]?")
NO_NEW_PRIVILEGES = {"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"}
PRIVILEGED_ULIMITS = {"memlock", "rtprio", "nice"}
UNSAFE_MOUNT_OPTIONS = {"exec", "suid", "dev"}


def weakens(option: str) -> bool:
    name, _, value = option.removeprefix("--").partition("=")
    if name == "cap-drop":
        return False  # dropping a capability, whatever its name, only takes away
    if name == "security-opt":
        return value not in NO_NEW_PRIVILEGES
    if name == "read-only":
        return value != "true"
    if name == "user":
        return not all(re.fullmatch("[0-9]+", part) and int(part) > 0 for part in value.split(":"))
    if name in LIMITS or name == "stop-timeout":  # a stop timeout of 0 gives the old container no grace
        number = LIMIT_VALUE.fullmatch(value)
        return number is None or float(number.group(1)) == 0
    if name == "ulimit":
        kind, _, limits = value.partition("=")
        return kind in PRIVILEGED_ULIMITS or not re.fullmatch("[0-9]+(:[0-9]+)?", limits)
    if name == "tmpfs":
        _, _, mount_options = value.partition(":")
        return bool(UNSAFE_MOUNT_OPTIONS & set(mount_options.split(",")))
    return True


HOSTILE_CASES: Counter[str] = Counter()


def _hostile(valid: str) -> st.SearchStrategy[str]:
    """Anything at all, and near-misses: a valid value with an attack spliced in."""
    spliced = st.builds(
        lambda head, attack, tail: head + attack + tail,
        st.sampled_from(["", valid, valid[:3]]),
        st.sampled_from(ATTACKS),
        st.sampled_from(["", valid, "x", "\n"]),
    )
    return st.one_of(st.text(max_size=80), spliced, st.just(valid))


def _load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_under_test", AGENT_PATH)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["agent_under_test"] = module
    spec.loader.exec_module(module)
    return module


AGENT = _load_agent()
DOCUMENT = read_template()["Resources"]["SwapDocument"]["Properties"]["Content"]["parameters"]
HOST_CONFIG: dict[str, Any] = {**AGENT.HOST_DEFAULTS, "state_dir": "/nonexistent/deployer-test"}
# The agent's own docker run flags that take the next argv element as their value.
TAKES_VALUE = {
    "--name",
    "--label",
    "--restart",
    "--stop-timeout",
    "--log-driver",
    "--log-opt",
    "--env-file",
    "-e",
    "--network",
    "-p",
}


class _Runner:
    """Stands in for the agent's process runner: records argv and stdin, runs nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, cmd: list[str], timeout: float = 120, stdin: str | None = None) -> Any:
        assert isinstance(cmd, list), cmd
        assert all(isinstance(part, str) for part in cmd), cmd
        self.calls.append((list(cmd), stdin))
        return subprocess.CompletedProcess(cmd, 0, "", "")


# ------------------------------------------------------------------ the path, stage by stage
def _release(config: AppConfig, event: dict[str, Any]) -> Release:
    push = parse_push_event(event)
    digest = push.detail.image_digest
    return make_release(
        7,
        app=config.app,
        repository=config.repository,
        image=image_reference(config, push.registry, digest),
        digest=digest,
        tag=push.detail.image_tag,
    )


def _through_control_plane(config_doc: dict[str, Any], event: dict[str, Any]) -> dict[str, list[str]] | str:
    """The swap parameters the control plane would send, or where it stopped the input."""
    try:
        config = AppConfig.parse(config_doc)
    except InvalidAppConfig:
        return "rejected by the app config model"
    try:
        release = _release(config, event)
    except (InvalidEvent, ValueError):
        return "rejected by the event model"
    try:
        return builders.swap_parameters(config, release)
    except InvalidAppConfig:
        return "rejected by the swap-parameter builder"


def _ssm_accepts(parameters: dict[str, list[str]]) -> bool:
    """What SSM checks before any host sees a value: each allowedPattern of the deployed document."""
    return all(
        re.fullmatch(DOCUMENT[name]["allowedPattern"], values[0]) for name, values in parameters.items()
    )


class _HostWithEveryFile:
    """``os`` as the agent sees it on a host where every env-file path it is given exists."""

    class path:
        @staticmethod
        def isfile(_: str) -> bool:
            return True

        def __getattr__(self, name: str) -> Any:
            return getattr(os.path, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def _on_the_host(argv: list[str]) -> tuple[list[str], str]:
    """The docker run argv and the nft script the agent builds for validated ``argv``."""
    runner = _Runner()
    original_run, original_os = AGENT.run, AGENT.os
    AGENT.run, AGENT.os = runner, _HostWithEveryFile()
    try:
        args = AGENT.checked_args(argv)
        agent = AGENT.Agent(HOST_CONFIG, args)
        docker = agent.run_args("green")
        agent.host.set_dnat(agent.colour_port("green"), f"app {agent.app} release {agent.release}")
    finally:
        AGENT.run, AGENT.os = original_run, original_os
    ((nft_cmd, script),) = runner.calls
    assert nft_cmd[-2:] == ["-f", "-"]
    return docker, script or ""


def _assert_host_argv_is_inert(parameters: dict[str, list[str]], docker: list[str], script: str) -> None:
    # every value is a separate argv element; nothing a shell would act on
    for element in docker:
        assert not (set(element) & (SHELL_META - {" "})), element
    assert docker[0] == "run"
    assert docker[-1] == parameters["image"][0]
    # only the agent's own flags and allow-listed docker options, no weakening value
    user_flags, rest = set(), iter(docker[1:-1])
    for element in rest:
        if element in TAKES_VALUE:
            next(rest)  # its value: one argv element, whatever it starts with
        elif element not in ("-d", "--init"):
            assert re.fullmatch(r"--[a-z-]+=.+", element), element
            user_flags.add(element[2:].split("=", 1)[0])
    assert user_flags <= set(AGENT.DOCKER_OPTION_NAMES), user_flags
    options = parameters["dockerOptions"][0].split()
    for option in options:
        assert option in docker
        assert not weakens(option), option
    # the nft script names only validated values (its comment is quoted text)
    comment = re.search(r'comment "([^"]*)"', script)
    assert comment
    assert re.fullmatch(r"app [a-z][a-z0-9-]* release [0-9]+", comment.group(1))


def _run_path(config_doc: dict[str, Any], event: dict[str, Any], counter: str) -> None:
    HOSTILE_CASES[counter] += 1
    outcome = _through_control_plane(config_doc, event)
    if isinstance(outcome, str):
        HOSTILE_CASES[f"{counter}: {outcome}"] += 1
        return
    parameters = outcome
    # Then what the control plane sends passes SSM's own check,
    assert _ssm_accepts(parameters), parameters
    for values in parameters.values():
        assert not (set(values[0]) & (SHELL_META - {" "})), values
    # the agent accepts it (grammar equal on both sides, so no value is refused late)
    argv = ["swap", *builders.agent_arguments(parameters)]
    docker, script = _on_the_host(argv)
    if parameters["envFile"][0]:
        # the env file is named to docker as one argv element; its content never travels
        assert docker[docker.index("--env-file") + 1] == parameters["envFile"][0]
    # and what reaches docker and nft is inert
    _assert_host_argv_is_inert(parameters, docker, script)
    HOSTILE_CASES[f"{counter}: accepted, inert on the host"] += 1


def _config(**container: Any) -> dict[str, Any]:
    doc = {**WEB_CONFIG, "launch_template": "lt-0123456789abcdef0"}
    doc["container"] = {**WEB_CONFIG["container"], **container}
    return doc


def _push(**detail: Any) -> dict[str, Any]:
    event = read_event("ecr_image_push")
    event["detail"].update(detail)
    return event


# ------------------------------------------------------------------ properties, one per field
@PROPERTY
@given(tag=_hostile("v1.4.2"))
def test_a_hostile_image_tag_never_reaches_a_host_outside_the_grammar(tag: str) -> None:
    _run_path(_config(), _push(**{"image-tag": tag}), "image tag")


@PROPERTY
@given(digest=_hostile("sha256:" + "a" * 64))
@example(digest="sha256:" + "a" * 64 + "\n")
@example(digest="sha256:" + "a" * 63 + ";")
def test_a_hostile_digest_never_reaches_a_host_outside_the_grammar(digest: str) -> None:
    _run_path(_config(), _push(**{"image-digest": digest}), "digest")


@PROPERTY
@given(repository=_hostile("team/web"))
def test_a_hostile_repository_name_never_reaches_a_host_outside_the_grammar(repository: str) -> None:
    doc = {**_config(), "repository": repository}
    _run_path(doc, _push(**{"repository-name": repository}), "repository")


@PROPERTY
@given(app=_hostile("web"))
@example(app="web\n")
def test_a_hostile_app_name_never_reaches_a_host_outside_the_grammar(app: str) -> None:
    _run_path({**_config(), "app": app}, _push(), "app name")


@PROPERTY
@given(registry=_hostile("registry.example.com:5000"))
def test_a_hostile_registry_never_reaches_a_host_outside_the_grammar(registry: str) -> None:
    _run_path({**_config(), "registry": registry, "registry_login": "none"}, _push(), "registry")


@PROPERTY
@given(path=_hostile("/etc/deployer/web.env"))
@example(path="/etc/web.env\n--privileged")
def test_a_hostile_env_file_path_never_reaches_a_host_outside_the_grammar(path: str) -> None:
    _run_path(_config(env_file=path), _push(), "env-file path")


@PROPERTY
@given(path=_hostile("/health"))
def test_a_hostile_health_path_never_reaches_a_host_outside_the_grammar(path: str) -> None:
    _run_path(_config(health_path=path), _push(), "health path")


@PROPERTY
@given(key=_hostile("max-size"), value=_hostile("10m"))
def test_hostile_log_options_never_reach_a_host_outside_the_grammar(key: str, value: str) -> None:
    _run_path(_config(log_options={key: value}), _push(), "log options")


@PROPERTY
@given(driver=_hostile("json-file"))
def test_a_hostile_log_driver_never_reaches_a_host_outside_the_grammar(driver: str) -> None:
    _run_path(_config(log_driver=driver), _push(), "log driver")


_docker_option = st.one_of(
    st.builds(
        lambda n, v: f"--{n}={v}",
        st.sampled_from(DOCKER_NAMES),
        st.one_of(st.sampled_from(DANGEROUS_DOCKER_VALUES), _hostile("256m")),
    ),
    _hostile("--memory=256m"),
)


@PROPERTY
@given(options=st.lists(_docker_option, max_size=4))
@example(options=["--security-opt=seccomp=unconfined"])
@example(options=["--security-opt=apparmor=unconfined"])
@example(options=["--security-opt=label=disable"])
@example(options=["--security-opt=systempaths=unconfined"])
@example(options=["--security-opt=no-new-privileges", "--cap-drop=ALL", "--read-only=true"])
@example(options=["--cpus=0"])  # docker: no CPU limit at all
@example(options=["--cpus=0.000"])
@example(options=["--stop-timeout=0"])
@example(options=["--cap-drop=privileged", "--cap-drop=label", "--tmpfs=/var/lib/network-device"])
def test_hostile_docker_options_never_reach_a_host_or_weaken_it(options: list[str]) -> None:
    _run_path(_config(docker_options=options), _push(), "docker options")


# ------------------------------------------------------------------ the agent on its own
AGENT_FLAG_OF = {
    "app": "--app",
    "image": "--image",
    "release": "--release",
    "containerPort": "--port",
    "healthPath": "--health-path",
    "healthTimeout": "--health-timeout",
    "envFile": "--env-file",
    "dockerOptions": "--docker-options",
    "logDriver": "--log-driver",
    "logOptions": "--log-options",
    "retain": "--retain",
    "registryLogin": "--registry-login",
}
VALID_ARGV = {
    "app": "web",
    "image": "registry.example.com/team/web@sha256:" + "a" * 64,
    "release": "7",
    "containerPort": "8080",
    "healthPath": "/health",
    "healthTimeout": "30",
    "envFile": "",
    "dockerOptions": "--memory=256m",
    "logDriver": "json-file",
    "logOptions": "max-size=10m",
    "retain": "3",
    "registryLogin": "none",
}


@PROPERTY
@given(name=st.sampled_from(sorted(AGENT_FLAG_OF)), data=st.data())
def test_the_agent_refuses_what_the_document_refuses_even_when_sent_around_the_control_plane(
    name: str, data: st.DataObject
) -> None:
    # Given a hostile value for one flag, sent straight to the agent (as a hand-made SendCommand would)
    value = data.draw(_hostile(VALID_ARGV[name]), label=name)
    HOSTILE_CASES["agent flags"] += 1
    argv = ["swap", *(f"{AGENT_FLAG_OF[n]}={value if n == name else v}" for n, v in VALID_ARGV.items())]
    document_accepts = bool(re.fullmatch(DOCUMENT[name]["allowedPattern"], value))
    # When the agent parses and validates it
    try:
        docker, script = _on_the_host(argv)
    except AGENT.Failure as exc:
        refusal = exc
    else:
        refusal = None
    if refusal is not None:
        # Then a refusal is an input failure that names the flag
        assert refusal.failure_class == "input"
        assert AGENT_FLAG_OF[name] in refusal.message or not document_accepts, refusal.message
        HOSTILE_CASES["agent flags: refused by the agent"] += 1
        return
    # Then anything it accepts SSM would have accepted too, and it reaches docker inert
    assert document_accepts, (name, value)
    _assert_host_argv_is_inert({k: [v] for k, v in VALID_ARGV.items()} | {name: [value]}, docker, script)
    HOSTILE_CASES["agent flags: accepted, inert on the host"] += 1


# ------------------------------------------------------------------ the hardened grammar, by example
WEAKENING_OPTIONS = [
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=label=disable",
    "--security-opt=systempaths=unconfined",
    "--security-opt=no-new-privileges=false",
    "--user=0",
    "--user=1000:0",
    "--pids-limit=-1",
    "--memory-swap=-1",
    "--ulimit=memlock=-1",
    "--ulimit=rtprio=99",
    "--tmpfs=/tmp:exec",
    "--label=deployer.digest=sha256:0",
    "--privileged=true",
    "--cap-add=ALL",
    "--network=host",
    "--volume=/:/host",
    "--user=root",
    "--read-only=false",
    "--cpus=0",
    "--stop-timeout=0",
    "--ulimit=nofile=-1",
]
HARDENING_OPTIONS = [
    "--security-opt=no-new-privileges",
    "--security-opt=no-new-privileges:true",
    "--cap-drop=ALL",
    "--read-only=true",
    "--user=1000:1000",
    "--tmpfs=/tmp:rw,noexec,nosuid,size=64m",
    "--ulimit=nofile=1024:2048",
    "--pids-limit=200",
    "--memory=256m",
    "--cpus=0.5",
    # harmless, whatever their words say: a capability of any name dropped, a path named so
    "--cap-drop=privileged",
    "--tmpfs=/var/lib/network-device:noexec",
]


def test_the_property_s_judge_of_weakening_agrees_with_the_grammar_s_examples() -> None:
    # Given the options the hardened grammar refuses and those it lets through
    # Then the judge the docker-options property uses calls every refused one weakening, no other
    assert [option for option in WEAKENING_OPTIONS if not weakens(option)] == []
    assert [option for option in HARDENING_OPTIONS if weakens(option)] == []


@pytest.mark.parametrize("option", WEAKENING_OPTIONS)
def test_options_that_weaken_the_host_are_refused_by_model_document_and_agent(option: str) -> None:
    # When the option is put in an app config, Then the config model names it
    with pytest.raises(InvalidAppConfig, match="docker_options"):
        AppConfig.parse(_config(docker_options=[option]))
    # and the deployed document's allowedPattern refuses it
    assert not re.fullmatch(DOCUMENT["dockerOptions"]["allowedPattern"], option)
    # and the agent refuses it with an input failure naming the flag, before touching anything
    argv = [
        "swap",
        *(f"{AGENT_FLAG_OF[n]}={option if n == 'dockerOptions' else v}" for n, v in VALID_ARGV.items()),
    ]
    with pytest.raises(AGENT.Failure) as refused:
        AGENT.checked_args(argv)
    assert refused.value.failure_class == "input"
    assert "--docker-options" in refused.value.message


@pytest.mark.parametrize("option", HARDENING_OPTIONS)
def test_options_that_harden_or_limit_pass_end_to_end(option: str) -> None:
    parameters = builders.swap_parameters(
        AppConfig.parse(_config(docker_options=[option])), _release(AppConfig.parse(_config()), _push())
    )
    assert _ssm_accepts(parameters)
    docker, _ = _on_the_host(["swap", *builders.agent_arguments(parameters)])
    assert option in docker


# ------------------------------------------------------------------ no shell, anywhere
def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


@pytest.mark.parametrize(
    "source",
    [AGENT_PATH, *sorted((ROOT / "layers/deployer/deployer").rglob("*.py"))],
    ids=lambda p: str(Path(p).relative_to(ROOT)),
)
def test_no_code_that_handles_these_values_can_start_a_shell(source: Path) -> None:
    # Given the agent and the control plane's code
    tree = ast.parse(source.read_text())
    for call in _calls(tree):
        name = ast.unparse(call.func)
        # Then no process is started through a shell
        assert name not in {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}, (
            name
        )
        for keyword in call.keywords:
            if keyword.arg == "shell":
                assert isinstance(keyword.value, ast.Constant), name
                assert keyword.value.value is False, name
        # and every subprocess call gets an argv list, never a command string
        if name.startswith("subprocess.") and call.args:
            assert not isinstance(call.args[0], ast.Constant | ast.JoinedStr | ast.BinOp), name


def test_every_property_ran_its_hostile_cases() -> None:
    print("\nHOSTILE CASES", dict(sorted(HOSTILE_CASES.items())))
    properties = [
        "image tag",
        "digest",
        "repository",
        "app name",
        "registry",
        "env-file path",
        "health path",
        "log options",
        "log driver",
        "docker options",
        "agent flags",
    ]
    ran = {name: HOSTILE_CASES[name] for name in properties}
    if not all(ran.values()):
        pytest.skip("run with the whole module to count the hostile cases")
    assert all(count >= CASES for count in ran.values()), ran


def test_the_agent_and_the_control_plane_hold_the_same_docker_option_values() -> None:
    from deployer import agent_contract  # noqa: PLC0415

    assert agent_contract.DOCKER_OPTION_VALUES == AGENT.DOCKER_OPTION_VALUES
    assert tuple(agent_contract.DOCKER_OPTION_VALUES) == agent_contract.DOCKER_OPTION_NAMES
