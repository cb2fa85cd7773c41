"""Pure builders: what the control plane sends, as exact values (no AWS calls here).

- `swap_parameters(config, release)`: the swap document's parameters;
- `agent_arguments(parameters)`: the agent's command-line flags for the same values;
- `send_timeout_seconds(config, max_concurrency, hosts)`: SendCommand's TimeoutSeconds;
- `user_data(config, release, document_name, pointer_parameter, region)`: the boot script of a
  launch-template version (reads the agent from the swap document, then `agent.py boot ...`).

EC2 caps user data at 16 KB, which the agent no longer fits in even compressed; the swap
document already carries it (xz + base64), so a booting host reads it from there with the
instance role (`ssm:GetDocument`) and the AWS CLI it needs anyway for the pointer.
"""

from __future__ import annotations

import math
import re
import shlex

from deployer.agent_contract import AGENT_FLAGS, PARAMETER_PATTERNS
from deployer.errors import InvalidAppConfig, UserDataTooLarge
from deployer.models.config import AppConfig
from deployer.models.records import Release
from deployer.names import REGION_PATTERN

# EC2 limit on raw user data (before base64).
USER_DATA_LIMIT = 16 * 1024
AGENT_DIR = "/opt/deployer"
# The heredoc delimiter around the compressed agent in the swap document (tools/render_template.py).
AGENT_MARKER = "DEPLOYER_AGENT_XZ"
# A fresh instance retries reading the document this many times (1 s, 2 s, ... apart).
DOCUMENT_ATTEMPTS = 8
# botocore's ssm model: DocumentARN / DocumentName.
DOCUMENT_NAME_PATTERN = r"[a-zA-Z0-9_\-.:/]{3,128}"


# Reads the swap document (JSON) and writes the agent its script embeds: the base64 lines of the
# heredoc that tools/render_template.py puts there, xz-compressed. Written beside the target and
# renamed, so a concurrent swap command never runs a half-written agent.
_EXTRACT = (
    "import base64,json,lzma,os,sys;"
    "steps=json.load(open(sys.argv[1]))['mainSteps'];"
    "lines=[l for s in steps for l in s['inputs']['runCommand']];"
    "i=[n for n,l in enumerate(lines) if l.endswith(\"<<'" + AGENT_MARKER + "'\")][0];"
    "j=lines.index('" + AGENT_MARKER + "',i);"
    "t=sys.argv[2]+'.new';"
    "open(t,'wb').write(lzma.decompress(base64.b64decode(''.join(lines[i+1:j]))));"
    "os.rename(t,sys.argv[2])"
)


def swap_parameters(config: AppConfig, release: Release) -> dict[str, list[str]]:
    """The swap document's parameters for deploying `release` of `config`'s app."""
    container = config.container
    values = {
        "app": config.app,
        "image": release.image,
        "release": str(release.release),
        "containerPort": str(container.port),
        "healthPath": container.health_path,
        "healthTimeout": str(container.health_timeout),
        "envFile": container.env_file or "",
        "dockerOptions": " ".join(container.docker_options),
        "logDriver": container.log_driver,
        "logOptions": ",".join(f"{k}={v}" for k, v in sorted(container.log_options.items())),
        "retain": str(config.retain),
        "registryLogin": config.registry_login,
        "executionTimeout": str(config.rollout.command_timeout),
    }
    for name, value in values.items():
        if not re.fullmatch(PARAMETER_PATTERNS[name], value):
            raise InvalidAppConfig(
                f"swap parameter {name}={value!r} does not match {PARAMETER_PATTERNS[name]}"
            )
    return {name: [value] for name, value in values.items()}


# SendCommand's TimeoutSeconds bounds (botocore's ssm model: min 30, max 2,592,000).
TIMEOUT_SECONDS_MIN = 30
TIMEOUT_SECONDS_MAX = 2_592_000


def waves(max_concurrency: str, hosts: int) -> int:
    """The most rounds SSM may need to run `max_concurrency` at a time over up to `hosts` targets.

    A percentage is taken of the targets SSM resolves when it sends, and SSM documents no
    rounding: assume the fewest at a time (rounded down, at least 1) for every fleet size up to
    `hosts`, so the figure holds however many instances the group has then."""
    hosts = max(hosts, 1)
    if not max_concurrency.endswith("%"):
        return math.ceil(hosts / int(max_concurrency))
    percent = int(max_concurrency[:-1])
    return max(math.ceil(n / max(n * percent // 100, 1)) for n in range(1, hosts + 1))


def send_timeout_seconds(config: AppConfig, max_concurrency: str, hosts: int) -> int:
    """SendCommand's TimeoutSeconds for a swap over up to `hosts` instances.

    TimeoutSeconds is one deadline for the whole command: an invocation still Pending or Delayed
    when it passes ends Delivery Timed Out. With rate control the last wave is only due after
    the waves before it, so the deadline is every wave's command time plus the delivery timeout
    (capped at SSM's maximum). Each host's own run is bounded by the document's executionTimeout.
    """
    rollout = config.rollout
    total = waves(max_concurrency, hosts) * rollout.command_timeout + rollout.delivery_timeout
    return max(TIMEOUT_SECONDS_MIN, min(total, TIMEOUT_SECONDS_MAX))


def agent_arguments(parameters: dict[str, list[str]]) -> list[str]:
    """The agent flags for a set of swap parameters (executionTimeout is SSM's, not the agent's).

    Always `--flag=value`: a value may itself start with `--` (docker options)."""
    return [f"{flag}={parameters[name][0]}" for name, flag in AGENT_FLAGS.items()]


def user_data(
    config: AppConfig,
    release: Release,
    document_name: str,
    pointer_parameter: str,
    region: str,
) -> str:
    """A POSIX shell boot script that installs the agent and boots `release`.

    The agent is read from the swap document with the instance role, so the host runs the same
    agent its swap commands run. The agent first tries the pointer parameter (a newer release
    may have been deployed since this version was created) and falls back to the release baked
    in here."""
    if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", pointer_parameter):
        raise InvalidAppConfig(f"pointer parameter name {pointer_parameter!r} is not valid")
    if not re.fullmatch(REGION_PATTERN, region):
        raise InvalidAppConfig(f"region {region!r} is not valid")
    if not re.fullmatch(DOCUMENT_NAME_PATTERN, document_name):
        raise InvalidAppConfig(f"swap document name {document_name!r} is not valid")
    args = [
        "boot",
        *agent_arguments(swap_parameters(config, release)),
        f"--pointer-parameter={pointer_parameter}",
        f"--region={region}",
    ]
    command = " ".join(shlex.quote(a) for a in ["python3", f"{AGENT_DIR}/agent.py", *args])
    get_document = " ".join(
        shlex.quote(a)
        for a in [
            "aws",
            "ssm",
            "get-document",
            "--region",
            region,
            "--name",
            document_name,
            "--document-format",
            "JSON",
            "--query",
            "Content",
            "--output",
            "text",
        ]
    )
    script = "\n".join(
        [
            "#!/bin/sh",
            f"# deployer: {config.app} release {release.release} {release.digest}",
            "set -eu",
            f"mkdir -p {AGENT_DIR}",
            # SSM may be briefly unreachable while the instance's network comes up.
            "n=0",
            f"until {get_document} > {AGENT_DIR}/document.json; do",
            f'  n=$((n + 1)); [ "$n" -lt {DOCUMENT_ATTEMPTS} ] || exit 1; sleep "$n"',
            "done",
            f"python3 -c {shlex.quote(_EXTRACT)} {AGENT_DIR}/document.json {AGENT_DIR}/agent.py",
            f"{command} >>/var/log/deployer-boot.log 2>&1",
            "",
        ]
    )
    size = len(script.encode())
    if size >= USER_DATA_LIMIT:
        raise UserDataTooLarge(f"user data is {size} bytes; EC2 allows {USER_DATA_LIMIT}")
    return script
