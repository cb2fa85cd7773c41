"""A release's config: plain environment variables and secret references, and the pinned form a
release carries (each secret at one exact version), encoded as the swap document's
`releaseConfig` (agent_contract: base64 of one JSON object, never a secret's value).

The app config names each secret by reference; a reference is parsed here once:

    ssm:/path/to/name | ssm:name               a Parameter Store parameter by name
    arn:<partition>:ssm:<region>:<account>:parameter/<name>
    secretsmanager:<name>                      a Secrets Manager secret by name
    arn:<partition>:secretsmanager:<region>:<account>:secret:<name>-<6 chars>

Docker's env file is line-based, so neither a name nor a value may hold a line break or any
other control character; names are what a shell and docker accept as a variable name.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployer.agent_contract import RELEASE_CONFIG_MAX_CHARS, RELEASE_CONFIG_VERSION

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
ENV_VALUE_MAX_CHARS = 2048
ENVIRONMENT_MAX_ENTRIES = 100
SECRETS_MAX_ENTRIES = 50
# Unicode categories a value may not hold: control characters (newline, NUL, escape...),
# unpaired surrogates (not encodable as UTF-8, which docker requires) and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

# The encoded releaseConfig also rides in the pointer parameter (Pointer.release_config), whose
# JSON must stay within SSM's 4 KB standard tier next to the app, image, digest and tag (at most
# ~900 characters): app configs are held to this budget, below the swap parameter's own 4096.
RELEASE_CONFIG_BUDGET = 3072
assert RELEASE_CONFIG_BUDGET <= RELEASE_CONFIG_MAX_CHARS
# The longest version a secret can pin, for the budget check at config time: a Parameter Store
# Version is a long (19 digits), a Secrets Manager VersionId 32-64 characters (botocore).
_LONGEST_VERSION = {"ssm": "9" * 19, "secretsmanager": "v" * 64}

# Parameter Store: a-zA-Z0-9_.- and `/` between up to 15 levels; a name in a hierarchy starts with
# `/`; never prefixed `aws` or `ssm` (any case); with its ARN at most 1011 characters.
_SSM_SEGMENT = r"[A-Za-z0-9_.-]+"
SSM_NAME_PATTERN = rf"^({_SSM_SEGMENT}|(/{_SSM_SEGMENT}){{1,15}})$"
SSM_NAME_MAX_CHARS = 1011
# Secrets Manager: ASCII letters, digits and /_+=.@- (1-512).
SECRET_NAME_PATTERN = r"^[A-Za-z0-9/_+=.@-]{1,512}$"  # noqa: S105 - a pattern, not a password
_PARTITION = r"aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc"
_REGION = r"[a-z]{2}(-[a-z]+){1,3}-[0-9]"
_ACCOUNT = r"[0-9]{12}"
SSM_ARN_PATTERN = rf"^arn:({_PARTITION}):ssm:{_REGION}:{_ACCOUNT}:parameter(/{_SSM_SEGMENT}){{1,15}}$"
# A secret's ARN ends with `-` and six random characters Secrets Manager adds to the name.
SECRET_ARN_PATTERN = (
    rf"^arn:({_PARTITION}):secretsmanager:{_REGION}:{_ACCOUNT}:secret:"
    r"[A-Za-z0-9/_+=.@-]{1,512}-[A-Za-z0-9]{6}$"
)

Source = Literal["ssm", "secretsmanager"]


@dataclass(frozen=True)
class SecretRef:
    """A parsed secret reference: where it lives and the id the host fetches it by."""

    source: Source
    id: str  # a parameter name or ARN / a secret name or ARN, as written

    @property
    def ssm_names(self) -> tuple[str, ...]:
        """The parameter names DescribeParameters' `Name Equals` filter may match (it takes names,
        not ARNs). An ARN's one-level name is `parameter/x` whether the name is `x` or `/x`."""
        if not self.id.startswith("arn:"):
            return (self.id,)
        rest = self.id.split(":parameter", 1)[1]
        return (rest,) if rest.count("/") > 1 else (rest[1:], rest)


def parse_secret_reference(reference: str) -> SecretRef:
    """The reference an app config names; ValueError says what is wrong with it."""
    if reference.startswith("arn:"):
        if re.fullmatch(SSM_ARN_PATTERN, reference) and len(reference) <= SSM_NAME_MAX_CHARS:
            ref = SecretRef("ssm", reference)
            _check_ssm_name(ref.ssm_names[0])
            return ref
        if re.fullmatch(SECRET_ARN_PATTERN, reference) and len(reference) <= 2048:
            return SecretRef("secretsmanager", reference)
        raise ValueError(
            "is not a Parameter Store parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME) "
            "or a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX)"
        )
    source, sep, name = reference.partition(":")
    if sep and source == "ssm":
        _check_ssm_name(name)
        return SecretRef("ssm", name)
    if sep and source == "secretsmanager":
        if not re.fullmatch(SECRET_NAME_PATTERN, name):
            raise ValueError(
                "a Secrets Manager secret name has 1-512 ASCII letters, digits and /_+=.@- characters"
            )
        return SecretRef("secretsmanager", name)
    raise ValueError("must be `ssm:NAME`, `secretsmanager:NAME`, or a Parameter Store or Secrets Manager ARN")


def _check_ssm_name(name: str) -> None:
    if not re.fullmatch(SSM_NAME_PATTERN, name) or len(name) > SSM_NAME_MAX_CHARS:
        raise ValueError(
            "a Parameter Store name has a-zA-Z0-9_.- characters, `/` between at most 15 levels "
            "(then starting with `/`), at most 1011 characters"
        )
    if name.lstrip("/")[:3].lower() in ("aws", "ssm"):
        raise ValueError("a Parameter Store name cannot begin with `aws` or `ssm`")


def check_env_name(name: str) -> str:
    if not re.fullmatch(ENV_NAME_PATTERN, name):
        raise ValueError("a variable name is a letter or `_`, then letters, digits or `_` (at most 128)")
    return name


def check_env_value(value: str) -> str:
    if len(value) > ENV_VALUE_MAX_CHARS:
        raise ValueError(f"a value has at most {ENV_VALUE_MAX_CHARS} characters")
    for char in value:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise ValueError(
                f"a value cannot hold control characters or line breaks (found U+{ord(char):04X}): "
                "docker's env file is one line per variable"
            )
    return value


class PinnedSecret(BaseModel):
    """One secret at the exact version a release runs with (never its value)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    var: str = Field(pattern=ENV_NAME_PATTERN)
    source: Source = Field(alias="from")
    id: str = Field(min_length=1, max_length=2048)
    version: str = Field(min_length=1, max_length=64)


class ReleaseConfig(BaseModel):
    """The config one release runs with: plain variables and each secret's pinned version."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    environment: dict[str, str] = Field(default_factory=dict)
    secrets: tuple[PinnedSecret, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.environment and not self.secrets

    def payload(self) -> dict[str, object]:
        """The agent contract's JSON object (agent_contract: `releaseConfig`)."""
        return {
            "v": RELEASE_CONFIG_VERSION,
            "environment": dict(sorted(self.environment.items())),
            "secrets": [s.model_dump(by_alias=True) for s in sorted(self.secrets, key=lambda s: s.var)],
        }

    def encode(self) -> str:
        """The swap document's `releaseConfig`: "" for no config, else base64 of the compact JSON."""
        if self.empty:
            return ""
        text = json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False)
        return base64.b64encode(text.encode()).decode("ascii")

    def secret_versions(self) -> dict[str, str]:
        return {s.var: s.version for s in self.secrets}


def decode(encoded: str) -> ReleaseConfig:
    """The inverse of `ReleaseConfig.encode` (for readers of the pointer and for tests)."""
    if not encoded:
        return ReleaseConfig()
    data = json.loads(base64.b64decode(encoded, validate=True))
    return ReleaseConfig(environment=data["environment"], secrets=tuple(data["secrets"]))


def worst_case_chars(environment: dict[str, str], secrets: dict[str, SecretRef]) -> int:
    """The encoded length of a release of this config when each secret pins its longest version."""
    pinned = tuple(
        PinnedSecret(var=var, source=ref.source, id=ref.id, version=_LONGEST_VERSION[ref.source])
        for var, ref in secrets.items()
    )
    return len(ReleaseConfig(environment=environment, secrets=pinned).encode())


def pin(environment: dict[str, str], refs: dict[str, SecretRef], versions: dict[str, str]) -> ReleaseConfig:
    """The config a release records: the app's environment, each secret at `versions[var]`."""
    return ReleaseConfig(
        environment=dict(environment),
        secrets=tuple(
            PinnedSecret(var=var, source=ref.source, id=ref.id, version=versions[var])
            for var, ref in sorted(refs.items())
        ),
    )
