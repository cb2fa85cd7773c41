"""Pure builders: what the control plane sends, as exact values (no AWS calls here).

- `swap_parameters(config, release)`: the swap document's parameters;
- `agent_arguments(parameters)`: the agent's command-line flags for the same values;
- `send_timeout_seconds(config, max_concurrency, hosts)`: SendCommand's TimeoutSeconds;
- `user_data(config, release, document_name, pointer_parameter, region)`: the boot script of a
  launch-template version (reads the agent from the swap document, then `agent.py boot ...`);
- `with_operator_user_data(existing, boot)`: the user data a release's version carries: the
  operator's own user data kept, the deployer's boot part added after it (MIME multi-part).

EC2 caps user data at 16 KB, which the agent no longer fits in even compressed; the swap
document already carries it (xz + base64), so a booting host reads it from there with the
instance role (`ssm:GetDocument`) and the AWS CLI it needs anyway for the pointer.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import shlex

from deployer.agent_contract import (
    AGENT_FLAGS,
    PARAMETER_PATTERNS,
    TASK_EXECUTION_MARGIN,
    TASK_PARAMETER_PATTERNS,
    encode_task_argv,
)
from deployer.errors import InvalidAppConfig, UserDataTooLarge
from deployer.models.config import AppConfig
from deployer.models.records import Release
from deployer.names import REGION_PATTERN

# EC2 limit on raw user data (before base64).
USER_DATA_LIMIT = 16 * 1024
# The deployer's part of a multi-part user data. cloud-init runs shell-script parts in the order
# of their file names, so "zz-" puts the boot after the operator's scripts (which install what
# the boot needs on a stock AMI), and the name tells the next release which part to replace.
BOOT_PART_NAME = "zz-deployer-boot.sh"
# The second line of every boot script (`user_data`): a whole user data starting like this is
# the deployer's alone (a version made before operator user data was kept).
BOOT_MARKER = "# deployer: "
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


def swap_parameters(
    config: AppConfig, release: Release, *, keep_standby: bool = False
) -> dict[str, list[str]]:
    """The swap document's parameters for deploying `release` of `config`'s app; `keep_standby`
    (a stage before the last) adds `keepStandby: "true"`, which no other command carries."""
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
        "releaseConfig": release.config.encode(),
    }
    if keep_standby:
        values["keepStandby"] = "true"
    for name, value in values.items():
        if not re.fullmatch(PARAMETER_PATTERNS[name], value):
            raise InvalidAppConfig(
                f"swap parameter {name}={value!r} does not match {PARAMETER_PATTERNS[name]}"
            )
    return {name: [value] for name, value in values.items()}


# Swap parameters the task document takes as they are: the task runs in a container of the
# release's image with the app container's env, docker options, log driver and pinned config.
TASK_SHARED_PARAMETERS = (
    "app",
    "image",
    "release",
    "envFile",
    "dockerOptions",
    "logDriver",
    "logOptions",
    "registryLogin",
    "releaseConfig",
)


def task_parameters(config: AppConfig, release: Release) -> dict[str, list[str]]:
    """The task document's parameters for `release`'s task (the app config has one)."""
    if config.release_task is None:
        raise InvalidAppConfig(f"{config.app} has no release_task")
    swap = swap_parameters(config, release)
    parameters = {name: swap[name] for name in TASK_SHARED_PARAMETERS}
    values = {
        "argv": encode_task_argv(config.release_task),
        "taskTimeout": str(config.release_task_timeout),
        "executionTimeout": str(config.release_task_timeout + TASK_EXECUTION_MARGIN),
    }
    for name, value in values.items():
        pattern = TASK_PARAMETER_PATTERNS.get(name, PARAMETER_PATTERNS.get(name, ""))
        if not re.fullmatch(pattern, value):
            raise InvalidAppConfig(f"task parameter {name}={value!r} does not match {pattern}")
        parameters[name] = [value]
    return parameters


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

    Always `--flag=value`: a value may itself start with `--` (docker options). `keepStandby`
    only when the parameters carry it (the agent's default is "false")."""
    return [
        f"{flag}={parameters[name][0]}"
        for name, flag in AGENT_FLAGS.items()
        if name in parameters or name != "keepStandby"
    ]


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
            f"{BOOT_MARKER}{config.app} release {release.release} {release.digest}",
            "set -eu",
            # One line naming what the AMI lacks, instead of a failure deep in the boot.
            "missing=''",
            "for c in aws python3; do command -v \"$c\" >/dev/null 2>&1 || missing=\"$missing $c\"; done",
            'if [ -n "$missing" ]; then',
            "  echo \"deployer boot: missing on this host:$missing (bake it into the AMI or install it in"
            " the launch template's user data; README, What the hosts need)\" >&2",
            "  exit 1",
            "fi",
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



def _is_mime(text: str) -> bool:
    # cloud-init's own test (user_data.convert_string): a MIME-Version header near the start.
    return "mime-version:" in text[:4096].lower()


# Headers of the operator's part when its user data is not MIME: cloud-init reads a text/plain
# part by its first line (#!, #cloud-config, #include...), as it reads plain user data.
_OPERATOR_HEADERS = (
    'Content-Type: text/plain; charset="utf-8"\n'
    'Content-Disposition: attachment; filename="operator-user-data"\n'
    "\n"
)
_BOOT_HEADERS = (
    'Content-Type: text/x-shellscript; charset="us-ascii"\n'
    f'Content-Disposition: attachment; filename="{BOOT_PART_NAME}"\n'
    "\n"
)


def operator_part(existing: bytes) -> str | None:
    """The operator's user data in a version's user data, as a MIME body part (headers and
    content; None when there is none): plain user data gets text/plain headers, a MIME document
    is a part as it stands, and a release version's document gives back the part it carried."""
    if existing[:2] == b"\x1f\x8b":
        existing = gzip.decompress(existing)
    try:
        text = existing.decode()
    except UnicodeDecodeError as exc:
        raise InvalidAppConfig(
            "the launch template's user data is neither UTF-8 text nor gzip of it, "
            "so the deployer cannot add its boot part to it"
        ) from exc
    if not text.strip():
        return None
    lines = text.splitlines()
    if lines[0].startswith("#!") and len(lines) > 1 and lines[1].startswith(BOOT_MARKER):
        return None  # the boot script alone: there was no operator part
    if not _is_mime(text):
        return _OPERATOR_HEADERS + text
    ours = re.match(r'Content-Type: multipart/mixed; boundary="(deployer-[0-9a-f]{24})"\n', text)
    if ours is None or f'filename="{BOOT_PART_NAME}"' not in text:
        return text
    parts = text.split(f"\n--{ours.group(1)}\n")
    return parts[1] if len(parts) == 3 else None  # preamble, operator's, boot


def with_operator_user_data(existing: bytes | None, boot: str) -> str:
    """The user data of a release's launch-template version: the source version's own user data
    (`existing`) kept verbatim as the first part of a MIME multi-part document, the boot script
    the last part; `boot` alone when the source has none. Raises UserDataTooLarge beyond EC2's
    16 KB (before base64)."""
    part = operator_part(existing) if existing else None
    if part is None:
        result = boot
    else:
        boundary = "deployer-" + hashlib.sha256((part + boot).encode()).hexdigest()[:24]
        result = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\n'
            "MIME-Version: 1.0\n"
            f"\n--{boundary}\n"
            f"{part}"
            f"\n--{boundary}\n"
            f"{_BOOT_HEADERS}{boot}"
            f"\n--{boundary}--\n"
        )
    size = len(result.encode())
    if size >= USER_DATA_LIMIT:
        raise UserDataTooLarge(
            f"user data would be {size} bytes ({len(boot.encode())} of them the deployer's boot part, "
            f"the rest the launch template's own user data and the MIME framing); EC2 allows "
            f"{USER_DATA_LIMIT} before base64: move what the user data installs into the AMI"
        )
    return result
