"""The contract between the control plane and the host agent (`host/agent.py`).

Exit codes and failure classes mirror docs/architecture.md and the agent (a test keeps them
equal); `PARAMETER_PATTERNS` are the swap document's `allowedPattern`s; `AgentSummary` parses the
one JSON line the agent prints on stdout.
"""

from __future__ import annotations

import base64
import json
import re
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ExitCode(IntEnum):
    OK = 0
    INPUT = 2
    LOCK = 3
    PULL = 4
    START = 5
    HEALTH = 6
    SWITCH = 7
    CONFIG = 8
    TASK = 9


class FailureClass(StrEnum):
    NONE = "none"
    INPUT = "input"
    LOCK = "lock"
    PULL = "pull"
    START = "start"
    HEALTH = "health"
    SWITCH = "switch"
    CONFIG = "config"
    TASK = "task"


EXIT_CODE_BY_CLASS: dict[FailureClass, ExitCode] = {
    FailureClass.NONE: ExitCode.OK,
    FailureClass.INPUT: ExitCode.INPUT,
    FailureClass.LOCK: ExitCode.LOCK,
    FailureClass.PULL: ExitCode.PULL,
    FailureClass.START: ExitCode.START,
    FailureClass.HEALTH: ExitCode.HEALTH,
    FailureClass.SWITCH: ExitCode.SWITCH,
    FailureClass.CONFIG: ExitCode.CONFIG,
    FailureClass.TASK: ExitCode.TASK,
}
CLASS_BY_EXIT_CODE: dict[int, FailureClass] = {int(code): cls for cls, code in EXIT_CODE_BY_CLASS.items()}

# Failures that say nothing about the image: the release's pinned config could not be fetched
# on the host (a secret missing, denied or throttled). The same digest may deploy again.
IMAGE_INNOCENT_CLASSES: frozenset[str] = frozenset({FailureClass.CONFIG.value})


class WarningClass(StrEnum):
    """Problems after the new release went live: the agent exits 0 (SSM Success, so the host
    never counts toward MaxErrors) and names the problem in the summary's `warning`."""

    CLEANUP = "cleanup"


class Outcome(StrEnum):
    LIVE = "live"
    ALREADY_LIVE = "already_live"
    FAILED = "failed"
    # The release task (`agent.py task`): it ran and exited 0, now or in an earlier run.
    TASK_SUCCEEDED = "task_succeeded"


# Outcomes after which the new release serves traffic on the host.
SERVING_OUTCOMES = frozenset({Outcome.LIVE, Outcome.ALREADY_LIVE})


# `docker run` options an app may add; the agent enforces the same allow-list.
DOCKER_OPTION_NAMES: tuple[str, ...] = (
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
)
# The values each option may take (the agent holds the same table): limits, a non-root user, a
# read-only root, noexec tmpfs mounts, dropped capabilities, no-new-privileges. Nothing that lifts
# a limit, runs as root or relaxes confinement (seccomp/apparmor/label/systempaths=unconfined),
# and no label: the agent's deployer.* labels decide which release a container is.
_SIZE = "[1-9][0-9]{0,12}[bkmg]?"
_TMPFS_OPTION = f"(rw|ro|noexec|nosuid|nodev|size={_SIZE}|mode=[0-7]{{3,4}})"
DOCKER_OPTION_VALUES: dict[str, str] = {
    # never 0 (docker: no CPU limit at all)
    "cpus": "([1-9][0-9]{0,2}([.][0-9]{1,3})?|0[.]([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))",
    "cpu-shares": "[1-9][0-9]{0,5}",
    "memory": _SIZE,
    "memory-reservation": _SIZE,
    "memory-swap": _SIZE,
    "pids-limit": "[1-9][0-9]{0,6}",
    "shm-size": _SIZE,
    "ulimit": "(nofile|nproc|core|fsize|stack|cpu|as|data|locks|msgqueue|sigpending)"
    "=[0-9]{1,10}(:[0-9]{1,10})?",
    "user": "[1-9][0-9]{0,9}(:[1-9][0-9]{0,9})?",
    "read-only": "true",
    "tmpfs": f"/[A-Za-z0-9._/-]{{1,200}}(:{_TMPFS_OPTION}(,{_TMPFS_OPTION})*)?",
    "stop-timeout": "[1-9][0-9]{0,3}",  # never 0: the old container gets a grace period
    "cap-drop": "[A-Za-z_]{1,40}",
    "security-opt": "no-new-privileges(:true|=true)?",
}
_OPTION = "--(" + "|".join(re.escape(n) + "=" + DOCKER_OPTION_VALUES[n] for n in DOCKER_OPTION_NAMES) + ")"
_LOG_PAIR = r"[a-z0-9-]+=[A-Za-z0-9._/:-]+"

# The swap document's parameters and their allowedPattern (docs/architecture.md). None admits a
# quote, `$`, backtick, `;`, `&`, `|`, `<`, `>`, newline or backslash.
PARAMETER_PATTERNS: dict[str, str] = {
    "app": r"^[a-z][a-z0-9-]{0,39}$",
    "image": r"^[a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?/[a-z0-9][a-z0-9._/-]*@sha256:[a-f0-9]{64}$",
    "release": r"^[1-9][0-9]{0,8}$",
    "containerPort": r"^[1-9][0-9]{0,4}$",
    "healthPath": r"^/[A-Za-z0-9._~/-]{0,200}$",
    "healthTimeout": r"^[1-9][0-9]{0,3}$",
    "envFile": r"^(/[A-Za-z0-9._/-]{1,200})?$",
    "dockerOptions": rf"^({_OPTION}( {_OPTION})*)?$",
    "logDriver": r"^(json-file|local|awslogs|journald|none)$",
    "logOptions": rf"^({_LOG_PAIR}(,{_LOG_PAIR})*)?$",
    "retain": r"^[1-9][0-9]?$",
    "registryLogin": r"^(ecr|none)$",
    "executionTimeout": r"^[1-9][0-9]{1,4}$",
    "releaseConfig": r"^[A-Za-z0-9+/=]{0,4096}$",
    "keepStandby": r"^(true|false)$",
}

# Agent flag for each document parameter (executionTimeout is the SSM step timeout).
AGENT_FLAGS: dict[str, str] = {
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
    "releaseConfig": "--release-config",
    "keepStandby": "--keep-standby",
}
# `keepStandby` (default "false"): "true" on a staged release's stages before the last, so each
# canary host keeps the stable release's container running, drained, and an abort is one rule
# switch back to it (docs/agent.md, "Standby"). Every other command leaves it out: the last
# stage and a rollback converge the host on one container.

# `releaseConfig`: the release's pinned config, base64 of one JSON object (empty: none):
#   {"v": 1,
#    "environment": {"NAME": "value", ...},
#    "secrets": [{"var": "NAME", "from": "ssm" | "secretsmanager", "id": "<name or ARN>",
#                 "version": "<Parameter Version | Secrets Manager VersionId>"}, ...]}
# Never a secret's value: the agent fetches each pinned version with the instance role.
RELEASE_CONFIG_VERSION = 1
RELEASE_CONFIG_MAX_CHARS = 4096

SUMMARY_MAX_CHARS = 2400

# The release task (`agent.py task`, TaskDocument): its argv travels as base64 of a compact JSON
# list of strings, so no argument is ever read by a shell; each argument is printable ASCII
# (no control character, newline or NUL), the list is bounded, and so is its encoded form.
RELEASE_TASK_ARG_PATTERN = r"^[\x20-\x7e]{1,512}$"
RELEASE_TASK_MAX_ARGS = 32
RELEASE_TASK_ENCODED_MAX = 4096
# Seconds: the task's own bound, and the margin the SSM step gets on top of it (login and
# pull come first; the agent stops the container at the task's bound, SSM's timeout is the
# backstop).
RELEASE_TASK_MAX_TIMEOUT = 28800
TASK_EXECUTION_MARGIN = 900
TASK_PARAMETER_PATTERNS: dict[str, str] = {
    "argv": rf"^[A-Za-z0-9+/=]{{4,{RELEASE_TASK_ENCODED_MAX}}}$",
    "taskTimeout": r"^[1-9][0-9]{1,4}$",
}


def encode_task_argv(argv: tuple[str, ...] | list[str]) -> str:
    """The `argv` parameter of the task document: base64 of the compact JSON list."""
    return base64.b64encode(json.dumps(list(argv), separators=(",", ":")).encode("ascii")).decode("ascii")


class Timings(BaseModel):
    model_config = ConfigDict(extra="allow")

    lock: float = 0.0
    config: float = 0.0
    pull: float = 0.0
    start: float = 0.0
    health: float = 0.0
    switch: float = 0.0
    drain: float = 0.0
    cleanup: float = 0.0
    total: float = 0.0


class AgentSummary(BaseModel):
    """The agent's one-line JSON result for one host."""

    model_config = ConfigDict(extra="allow")

    agent: str = "deployer"
    version: int = 1
    host: str = ""
    app: str
    release: int | None = None
    digest: str | None = None
    outcome: Outcome
    failure_class: FailureClass
    warning: WarningClass | None = None
    exit_code: int
    message: str = ""
    previous_release: int | None = None
    timings: Timings = Field(default_factory=Timings)
    pull_attempts: int = 0
    container_exit: int | None = None
    log_tail: list[str] = Field(default_factory=list)

    @property
    def serving(self) -> bool:
        """True when the new release serves traffic on this host."""
        return self.outcome in SERVING_OUTCOMES


def parse_summary(output: str | None) -> AgentSummary | None:
    """The last agent summary line found in a command's output, or None.

    Output may be truncated (SSM keeps 2,500 characters) or mixed with other lines, so the
    search runs from the end and anything that is not a complete summary yields None.
    """
    if not output:
        return None
    for line in reversed(output.splitlines()):
        candidate = line.strip()
        if not (candidate.startswith("{") and candidate.endswith("}")):
            continue
        try:
            data: Any = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("agent") != "deployer":
            continue
        try:
            return AgentSummary.model_validate(data)
        except ValidationError:
            return None
    return None
