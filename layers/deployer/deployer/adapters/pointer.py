"""The release pointer: SSM String parameter `<prefix>/<app>/release` holding JSON.

SSM keeps the parameter's history, so every pointer move stays auditable; booting hosts read
it to start on the current release even when their launch-template version is older.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from pydantic import ValidationError

from deployer.adapters import aws_errors, error_code
from deployer.errors import AwsCallFailed, InvalidAppConfig, InvalidEvent
from deployer.models.records import Pointer

if TYPE_CHECKING:
    from mypy_boto3_ssm.client import SSMClient

# SSM's standard tier: values up to 4 KB.
STANDARD_TIER_BYTES = 4096


class PointerStore:
    def __init__(self, ssm: SSMClient, prefix: str) -> None:
        self._ssm = ssm
        self._prefix = prefix

    def name(self, app: str) -> str:
        return f"{self._prefix}/{app}/release"

    def get(self, app: str) -> Pointer | None:
        """The app's pointer, or None before its first deploy."""
        try:
            response = self._ssm.get_parameter(Name=self.name(app))
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise AwsCallFailed(f"reading the pointer of {app} failed: {exc}") from exc
        try:
            return Pointer.model_validate_json(response["Parameter"]["Value"])
        except ValidationError as exc:
            raise InvalidEvent(f"pointer {self.name(app)} does not hold a valid pointer") from exc

    def version(self, app: str, version: int) -> Pointer | None:
        """The pointer as it was at parameter `version` (SSM keeps the history), or None."""
        try:
            response = self._ssm.get_parameter(Name=f"{self.name(app)}:{version}")
        except ClientError as exc:
            if error_code(exc) in ("ParameterNotFound", "ParameterVersionNotFound"):
                return None
            raise AwsCallFailed(f"reading version {version} of the pointer of {app} failed: {exc}") from exc
        try:
            return Pointer.model_validate_json(response["Parameter"]["Value"])
        except ValidationError as exc:
            raise InvalidEvent(f"pointer {self.name(app)}:{version} does not hold a valid pointer") from exc

    def delete(self, app: str) -> None:
        """Remove the pointer (only to undo an app's first, failed, deploy)."""
        try:
            self._ssm.delete_parameter(Name=self.name(app))
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise AwsCallFailed(f"deleting the pointer of {app} failed: {exc}") from exc

    def put(self, pointer: Pointer) -> int:
        """Move the pointer; returns the parameter version."""
        value = pointer.model_dump_json()
        if len(value.encode()) > STANDARD_TIER_BYTES:
            # App configs are held to a releaseConfig budget that keeps this from happening.
            raise InvalidAppConfig(
                f"the pointer of {pointer.app} would be {len(value.encode())} bytes; a standard "
                f"parameter holds {STANDARD_TIER_BYTES} (shorten the app's environment or secrets)"
            )
        with aws_errors(f"moving the pointer of {pointer.app}"):
            response = self._ssm.put_parameter(
                Name=self.name(pointer.app),
                Value=value,
                Type="String",
                Overwrite=True,
                Description=f"release pointer of {pointer.app}",
            )
        return int(response["Version"])
