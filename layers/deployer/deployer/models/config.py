"""App configuration: one deployment target, validated strictly.

Stored as one item per app in the apps table (`AppsStore`); operators write it with
`deployer app put --file web.json`. Every error names the field and what is wrong.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deployer.agent_contract import (
    DOCKER_OPTION_NAMES,
    PARAMETER_PATTERNS,
    RELEASE_TASK_ARG_PATTERN,
    RELEASE_TASK_ENCODED_MAX,
    RELEASE_TASK_MAX_ARGS,
    RELEASE_TASK_MAX_TIMEOUT,
    encode_task_argv,
)
from deployer.errors import InvalidAppConfig
from deployer.models import describe_errors
from deployer.models.release_config import (
    ENVIRONMENT_MAX_ENTRIES,
    RELEASE_CONFIG_BUDGET,
    SECRETS_MAX_ENTRIES,
    SecretRef,
    check_env_name,
    check_env_value,
    parse_secret_reference,
    worst_case_chars,
)
from deployer.models.ssm_model import check_send_command_value

APP_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
# ECR repository names: lowercase path segments separated by `/`.
REPOSITORY_PATTERN = r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"
REGISTRY_PATTERN = r"^[a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?$"
TAG_GLOB_PATTERN = r"^[A-Za-z0-9_.*?\[\]-]{1,128}$"
GROUP_NAME_PATTERN = r"^[A-Za-z0-9 _.:/@+=-]{1,255}$"
LAUNCH_TEMPLATE_PATTERN = r"^(lt-[0-9a-f]{8,17}|[A-Za-z0-9().\/_-]{3,128})$"
LAUNCH_TEMPLATE_ID_PATTERN = r"^lt-[0-9a-f]{8,17}$"

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


# Map keys and values are checked one by one, so an error's location names the variable
# (`secrets.API_KEY: ...`, `environment.bad name.[key]: ...`).
EnvName = Annotated[str, AfterValidator(check_env_name)]
EnvValue = Annotated[str, AfterValidator(check_env_value)]


def _check_reference(reference: str) -> str:
    parse_secret_reference(reference)
    return reference


SecretReference = Annotated[str, AfterValidator(_check_reference)]


class ContainerConfig(BaseModel):
    """How a host runs the app's container."""

    model_config = _STRICT

    port: int = Field(ge=1, le=65535, description="port the app listens on (127.0.0.1 / host network)")
    health_path: str = Field(default="/", pattern=PARAMETER_PATTERNS["healthPath"])
    health_timeout: int = Field(default=60, ge=1, le=9999, description="seconds the health gate waits")
    env_file: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]{1,200}$")
    docker_options: tuple[str, ...] = Field(default=(), max_length=20)
    log_driver: Literal["json-file", "local", "awslogs", "journald", "none"] = "json-file"
    log_options: dict[
        Annotated[str, Field(pattern=r"^[a-z0-9-]+$")], Annotated[str, Field(pattern=r"^[A-Za-z0-9._/:-]+$")]
    ] = Field(default_factory=dict)

    @field_validator("docker_options")
    @classmethod
    def _allowed_options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        single = PARAMETER_PATTERNS["dockerOptions"]
        for option in value:
            if not option or not re.fullmatch(single, option) or " " in option:
                raise ValueError(
                    f"{option!r} is not an allowed `--name=value` option "
                    f"(allowed names: {', '.join(DOCKER_OPTION_NAMES)})"
                )
        return value


# Stages (docs/stages.md): at most this many, and a bake of at most a day (the reconciler's
# tick ends a bake, so a longer one is a release nobody watches).
MAX_STAGES = 10
MAX_BAKE_SECONDS = 86400
PERCENT_PATTERN = r"^(100|[1-9][0-9]?)%$"


class Stage(BaseModel):
    """One stage of a progressive rollout: the hosts that run the release once it is sent (a
    count, or a share of the InService instances, cumulative), the bake after it, and whether an
    operator must approve (`deployer continue`) before the next stage."""

    model_config = _STRICT

    hosts: Annotated[int, Field(ge=1, le=10000)] | Annotated[str, Field(pattern=PERCENT_PATTERN)] = Field(
        description="cumulative hosts on the release after this stage: a count (1) or a share ('25%')"
    )
    bake_seconds: int = Field(
        default=0, ge=0, le=MAX_BAKE_SECONDS, description="seconds to wait after the stage"
    )
    approve: bool = Field(default=False, description="wait for `deployer continue APP` after the bake")

    @property
    def percent(self) -> int | None:
        return int(self.hosts[:-1]) if isinstance(self.hosts, str) else None

    def resolve(self, fleet: int) -> int:
        """The cumulative host count this stage asks for in a fleet of `fleet` InService hosts
        (a share rounds up, so "25%" of 3 hosts is 1, never 0)."""
        if isinstance(self.hosts, int):
            return min(self.hosts, fleet)
        return min(fleet, -(-fleet * int(self.hosts[:-1]) // 100))


# Built-in canary analysis (docs/stages.md): the new release's hosts against the stable
# release's hosts over the same window, from the proxies' per-release metrics.
MAX_ALARMS = 10
ALARM_NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,255}$"


class AnalysisConfig(BaseModel):
    """Thresholds of the canary analysis. The canary fails when, with at least `min_requests`
    answered by it, its 5xx rate is above max(`max_error_rate`, `error_rate_ratio` x stable's),
    or its p99 latency above `latency_ratio` x stable's (and above `latency_floor_ms`)."""

    model_config = _STRICT

    enabled: bool = Field(default=True, description="compare canary and stable during every bake")
    interval_seconds: int = Field(
        default=30, ge=1, le=3600, description="seconds between two checks during a bake"
    )
    min_requests: int = Field(
        default=50, ge=1, le=10_000_000, description="canary requests needed before judging"
    )
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="5xx share the canary may always have"
    )
    error_rate_ratio: float = Field(
        default=2.0, ge=1, le=1000, description="canary 5xx share allowed, as a multiple of stable's"
    )
    latency_ratio: float = Field(
        default=1.5, ge=1, le=1000, description="canary p99 allowed, as a multiple of stable's"
    )
    latency_floor_ms: float = Field(
        default=50.0, ge=0, le=600_000, description="a canary p99 below this never fails"
    )


class RolloutConfig(BaseModel):
    """Rate control and timeouts of the swap command (SSM Run Command semantics)."""

    model_config = _STRICT

    # SSM's own patterns (`_ssm_rate`): SendCommand rejects values these would let through.
    max_concurrency: str = Field(default="25%")
    # A rollback swaps every host to an image it retained and ran before, each swap health-gated
    # and zero-downtime: there is no unknown image to limit the blast radius of.
    rollback_max_concurrency: str = Field(default="100%", description="MaxConcurrency of rollback releases")
    max_errors: str = Field(default="0")
    command_timeout: int = Field(default=600, ge=30, le=28800, description="seconds one host may take")
    delivery_timeout: int = Field(
        default=600,
        ge=30,
        le=2592000,
        description="seconds SSM may take to deliver the swap to a host once its wave is due",
    )
    stages: tuple[Stage, ...] = Field(
        default=(),
        max_length=MAX_STAGES,
        description="progressive rollout (docs/stages.md); empty: every host in one command",
    )
    analysis: AnalysisConfig = Field(
        default_factory=AnalysisConfig, description="canary analysis during each bake (docs/stages.md)"
    )
    alarms: tuple[Annotated[str, Field(pattern=ALARM_NAME_PATTERN)], ...] = Field(
        default=(),
        max_length=MAX_ALARMS,
        description="CloudWatch alarms that fail a staged release when in ALARM (docs/stages.md)",
    )

    @field_validator("stages")
    @classmethod
    def _stages_grow(cls, value: tuple[Stage, ...]) -> tuple[Stage, ...]:
        if not value:
            return value
        if value[-1].hosts != "100%":
            raise ValueError(f'the last stage ({len(value) - 1}) must be "hosts": "100%"')
        # Counts grow among counts and shares among shares; a count and a share are compared
        # per fleet when the stage runs (a stage that adds no host there sends nothing).
        last_count = last_percent = 0
        for index, stage in enumerate(value):
            percent = stage.percent
            if percent is None:
                assert isinstance(stage.hosts, int)
                if stage.hosts <= last_count:
                    raise ValueError(
                        f"{index}.hosts: {stage.hosts} does not grow on an earlier stage's {last_count}"
                    )
                last_count = stage.hosts
            else:
                if percent <= last_percent:
                    raise ValueError(
                        f"{index}.hosts: {stage.hosts} does not grow on an earlier stage's {last_percent}%"
                    )
                last_percent = percent
        return value

    @field_validator("max_concurrency", "rollback_max_concurrency", "max_errors")
    @classmethod
    def _ssm_rate(cls, value: str, info: ValidationInfo) -> str:
        member = "MaxErrors" if info.field_name == "max_errors" else "MaxConcurrency"
        return check_send_command_value(member, value)


class AppConfig(BaseModel):
    """One deployment target ("app")."""

    model_config = _STRICT

    app: str = Field(pattern=APP_NAME_PATTERN)
    repository: str = Field(min_length=2, max_length=256, pattern=REPOSITORY_PATTERN)
    registry: str | None = Field(
        default=None,
        pattern=REGISTRY_PATTERN,
        description="registry host[:port]; default: the pushing account's ECR registry",
    )
    registry_login: Literal["ecr", "none"] = "ecr"
    tag_filter: tuple[Annotated[str, Field(pattern=TAG_GLOB_PATTERN)], ...] = Field(
        default=("*",), min_length=1, max_length=20
    )
    auto_scaling_group: str = Field(pattern=GROUP_NAME_PATTERN)
    launch_template: str = Field(pattern=LAUNCH_TEMPLATE_PATTERN, description="launch template id or name")
    container: ContainerConfig
    environment: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        max_length=ENVIRONMENT_MAX_ENTRIES,
        description="plain variables the container sees (no secrets: they go under `secrets`)",
    )
    secrets: dict[EnvName, SecretReference] = Field(
        default_factory=dict,
        max_length=SECRETS_MAX_ENTRIES,
        description="variable name -> ssm:NAME, secretsmanager:NAME or a parameter/secret ARN; "
        "each release pins the version current when it is recorded",
    )
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    auto_rollback: bool = True
    retain: int = Field(default=3, ge=1, le=99, description="releases each host keeps for instant rollback")
    release_task: tuple[Annotated[str, Field(pattern=RELEASE_TASK_ARG_PATTERN)], ...] | None = Field(
        default=None,
        min_length=1,
        max_length=RELEASE_TASK_MAX_ARGS,
        description="argv run once per release in a one-shot container of the new image before traffic moves",
    )
    release_task_timeout: int = Field(
        default=600,
        ge=10,
        le=RELEASE_TASK_MAX_TIMEOUT,
        description="seconds the release task may run before it is stopped (a failure)",
    )

    @field_validator("release_task")
    @classmethod
    def _task_fits(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(encode_task_argv(value)) > RELEASE_TASK_ENCODED_MAX:
            raise ValueError(
                f"the argv is too long once encoded (at most {RELEASE_TASK_ENCODED_MAX} characters)"
            )
        return value

    @model_validator(mode="after")
    def _release_config_fits(self) -> AppConfig:
        both = sorted(set(self.environment) & set(self.secrets))
        if both:
            raise ValueError(f"secrets.{both[0]}: is also in environment; a variable comes from one of them")
        refs = {var: parse_secret_reference(ref) for var, ref in self.secrets.items()}
        size = worst_case_chars(self.environment, refs)
        if size > RELEASE_CONFIG_BUDGET:
            raise ValueError(
                f"environment and secrets: a release of them would encode to up to {size} characters; "
                f"at most {RELEASE_CONFIG_BUDGET} fit the swap command and the release pointer "
                "(shorten values, or move large ones into one secret)"
            )
        return self

    @property
    def secret_refs(self) -> dict[str, SecretRef]:
        return {var: parse_secret_reference(ref) for var, ref in self.secrets.items()}

    @classmethod
    def parse(cls, data: Any) -> AppConfig:
        """Validate a decoded JSON document; InvalidAppConfig names every bad field."""
        if not isinstance(data, dict):
            raise InvalidAppConfig(f"app config must be a JSON object, got {type(data).__name__}")
        try:
            # JSON has no tuples: validating the JSON text accepts lists for tuple fields
            # while keeping every other type strict.
            return cls.model_validate_json(json.dumps(data))
        except ValidationError as exc:
            raise InvalidAppConfig(f"invalid app config: {describe_errors(exc)}") from exc

    def accepts_tag(self, tag: str | None) -> bool:
        """Whether a pushed tag passes the tag filter; an untagged push never does (buildx pushes
        multi-arch children and attestations by digest, untagged: none of them is a release)."""
        if tag is None:
            return False
        return any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.tag_filter)

    @property
    def launch_template_is_id(self) -> bool:
        return re.fullmatch(LAUNCH_TEMPLATE_ID_PATTERN, self.launch_template) is not None

    def to_document(self) -> dict[str, Any]:
        """The JSON-compatible form operators write and the apps table stores."""
        return self.model_dump(mode="json", exclude_none=True)
