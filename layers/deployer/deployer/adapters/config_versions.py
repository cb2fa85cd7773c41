"""Secret versions: the version of each secret an app config names that is current now, read
without ever reading a value.

- Parameter Store: `DescribeParameters` with a `Name Equals` filter answers the parameter's
  `Version` (GetParameter would return the value). DescribeParameters takes no resource-level
  permission, so the functions' roles grant it on `*` (docs/config-and-secrets.md).
- Secrets Manager: `DescribeSecret` answers `VersionIdsToStages`; the current version is the
  one labelled AWSCURRENT.

A secret that does not exist, or that the role may not describe, is `SecretNotResolvable` (the
caller records the release FAILED, or refuses an operator's deploy); anything else (throttling,
a timeout, a 5xx) is AwsCallFailed and the trigger is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from deployer.adapters import error_code
from deployer.errors import AwsCallFailed, DeployerError
from deployer.models.release_config import ReleaseConfig, SecretRef, pin

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_ssm.client import SSMClient

    from deployer.models.config import AppConfig

# Answers that say the secret cannot be described, now or on a retry: the name is wrong, the
# role may not see it, or the request itself is refused.
_FOR_GOOD = frozenset(
    {
        "ResourceNotFoundException",
        "ParameterNotFound",
        "AccessDeniedException",
        "AccessDenied",
        "InvalidParameterException",
        "InvalidRequestException",
        "InvalidFilterValue",
        "ValidationException",
    }
)
CURRENT_STAGE = "AWSCURRENT"


class SecretNotResolvable(DeployerError):
    """A secret the app config names cannot be described (missing, deleted, or not allowed)."""


class ConfigVersions:
    def __init__(
        self,
        ssm: SSMClient,
        secretsmanager: Callable[[], SecretsManagerClient],
    ) -> None:
        self._ssm = ssm
        # Built on first use: most functions never resolve a secret.
        self._secretsmanager = secretsmanager

    def resolve(self, config: AppConfig) -> ReleaseConfig:
        """The config a release of `config` pins now: its environment, each secret at its
        current version."""
        refs = config.secret_refs
        versions = {var: self.current(var, ref) for var, ref in sorted(refs.items())}
        return pin(config.environment, refs, versions)

    def current(self, var: str, ref: SecretRef) -> str:
        """The current version of one secret (a Parameter Version or a Secrets Manager VersionId)."""
        what = f"secret {var} ({ref.source}:{ref.id})"
        try:
            if ref.source == "ssm":
                return self._parameter_version(what, ref)
            return self._secret_version(what, ref)
        except ClientError as exc:
            code = error_code(exc)
            if code in _FOR_GOOD:
                raise SecretNotResolvable(f"{what} cannot be described: {code}") from exc
            raise AwsCallFailed(f"describing {what} failed: {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise AwsCallFailed(f"describing {what} failed: {exc}") from exc

    def _parameter_version(self, what: str, ref: SecretRef) -> str:
        names = ref.ssm_names
        response: Any = self._ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": list(names)}],
            MaxResults=len(names),
        )
        found = {p["Name"]: p for p in response.get("Parameters", [])}
        for name in names:  # an ARN's one-level name: `x` before `/x`
            if name in found:
                return str(found[name]["Version"])
        raise SecretNotResolvable(f"{what} not found in Parameter Store")

    def _secret_version(self, what: str, ref: SecretRef) -> str:
        response: Any = self._secretsmanager().describe_secret(SecretId=ref.id)
        if response.get("DeletedDate"):
            raise SecretNotResolvable(f"{what} is scheduled for deletion")
        for version, stages in (response.get("VersionIdsToStages") or {}).items():
            if CURRENT_STAGE in stages:
                return str(version)
        raise SecretNotResolvable(f"{what} has no {CURRENT_STAGE} version")
