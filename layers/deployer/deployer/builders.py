"""Pure builders: what the control plane sends, as exact values (no AWS calls here).

- `swap_parameters(config, release)`: the swap document's parameters;
- `agent_arguments(parameters)`: the agent's command-line flags for the same values;
- `user_data(config, release, agent_source, pointer_parameter, region)`: the boot script of a
  launch-template version (the agent embedded compressed, then `agent.py boot ...`).

EC2 caps user data at 16 KB and the agent (~50 KB of Python) does not fit with gzip+base64.
So the embedded copy drops comments, blank lines and function/class docstrings (the module
docstring stays: it is the usage text), is compressed with xz and encoded with base85. python3,
which the agent needs anyway, decodes it, so the host needs no extra tool.
"""

from __future__ import annotations

import ast
import base64
import functools
import io
import lzma
import re
import shlex
import tokenize

from deployer.agent_contract import AGENT_FLAGS, PARAMETER_PATTERNS
from deployer.errors import InvalidAppConfig, UserDataTooLarge
from deployer.models.config import AppConfig
from deployer.models.records import Release

# EC2 limit on raw user data (before base64).
USER_DATA_LIMIT = 16 * 1024
AGENT_DIR = "/opt/deployer"


# Reads the encoded agent on stdin and writes its source on stdout.
_DECODE = (
    "import base64,lzma,sys;"
    "sys.stdout.buffer.write(lzma.decompress(base64.b85decode(sys.stdin.read().strip())))"
)


def _docstring(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", None)
    if not body or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return None
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        return first if isinstance(first.value.value, str) else None
    return None


def compact_source(source: str) -> str:
    """`source` without comments, blank lines and function/class docstrings; same code otherwise.

    Works on lines, not by unparsing, so the result runs on the host's older python3 too."""
    drop: set[int] = set()
    stub: dict[int, str] = {}
    for node in ast.walk(ast.parse(source)):
        doc = _docstring(node)
        if doc is None or doc.lineno == getattr(node, "lineno", doc.lineno):
            continue  # none, or on the def line itself: keep it
        drop.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
        if len(getattr(node, "body", ())) == 1:
            stub[doc.lineno] = " " * doc.col_offset + "pass"
    inside_string: set[int] = set()
    comment_at: dict[int, int] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            inside_string.update(range(tok.start[0] + 1, tok.end[0] + 1))
        elif tok.type == tokenize.COMMENT and tok.start[0] > 1:  # keep the shebang
            comment_at[tok.start[0]] = tok.start[1]
    kept: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        if number in stub:
            kept.append(stub[number])
            continue
        if number in drop:
            continue
        text = line[: comment_at[number]].rstrip() if number in comment_at else line
        if text.strip() or number in inside_string:
            kept.append(text)
    return "\n".join(kept) + "\n"


# The agent ships with the layer, so a warm container compresses it once, not on every deploy.
@functools.lru_cache(maxsize=2)
def encode_agent(agent_source: str) -> str:
    """The compacted agent as xz + base85 text (no quote, backslash or newline in the alphabet)."""
    packed = lzma.compress(compact_source(agent_source).encode(), preset=9 | lzma.PRESET_EXTREME)
    return base64.b85encode(packed).decode("ascii")


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


def agent_arguments(parameters: dict[str, list[str]]) -> list[str]:
    """The agent flags for a set of swap parameters (executionTimeout is SSM's, not the agent's).

    Always `--flag=value`: a value may itself start with `--` (docker options)."""
    return [f"{flag}={parameters[name][0]}" for name, flag in AGENT_FLAGS.items()]


def user_data(
    config: AppConfig,
    release: Release,
    agent_source: str,
    pointer_parameter: str,
    region: str,
) -> str:
    """A POSIX shell boot script that installs the agent and boots `release`.

    The agent first tries the pointer parameter (a newer release may have been deployed since
    this version was created) and falls back to the release baked in here."""
    if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", pointer_parameter):
        raise InvalidAppConfig(f"pointer parameter name {pointer_parameter!r} is not valid")
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        raise InvalidAppConfig(f"region {region!r} is not valid")
    payload = encode_agent(agent_source)
    args = [
        "boot",
        *agent_arguments(swap_parameters(config, release)),
        f"--pointer-parameter={pointer_parameter}",
        f"--region={region}",
    ]
    command = " ".join(shlex.quote(a) for a in ["python3", f"{AGENT_DIR}/agent.py", *args])
    script = "\n".join(
        [
            "#!/bin/sh",
            f"# deployer: {config.app} release {release.release} {release.digest}",
            "set -eu",
            f"mkdir -p {AGENT_DIR}",
            f"python3 -c {shlex.quote(_DECODE)} > {AGENT_DIR}/agent.py.new <<'AGENT'",
            payload,
            "AGENT",
            f"mv {AGENT_DIR}/agent.py.new {AGENT_DIR}/agent.py",
            f"{command} >>/var/log/deployer-boot.log 2>&1",
            "",
        ]
    )
    size = len(script.encode())
    if size >= USER_DATA_LIMIT:
        raise UserDataTooLarge(f"user data is {size} bytes; EC2 allows {USER_DATA_LIMIT}")
    return script
