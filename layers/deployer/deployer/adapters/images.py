"""ECR images of an app's repository: does a digest or tag still exist, which image is newest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from deployer.errors import AwsCallFailed, ImageNotFound

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

_MISSING = frozenset({"ImageNotFoundException", "RepositoryNotFoundException"})


class Image(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    repository: str
    registry_id: str | None = None
    digest: str
    tags: tuple[str, ...] = ()
    pushed_at: datetime | None = None


class Images:
    def __init__(self, ecr: ECRClient) -> None:
        self._ecr = ecr

    def _describe(self, repository: str, image_id: dict[str, str], what: str) -> Image:
        try:
            response = self._ecr.describe_images(repositoryName=repository, imageIds=[image_id])  # type: ignore[list-item]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING:
                raise ImageNotFound(f"{what} is not in ECR repository {repository}") from exc
            raise AwsCallFailed(f"ecr describe_images on {repository} failed: {code}") from exc
        details = response.get("imageDetails", [])
        if not details:
            raise ImageNotFound(f"{what} is not in ECR repository {repository}")
        detail = details[0]
        return Image(
            repository=repository,
            registry_id=detail.get("registryId"),
            digest=detail["imageDigest"],
            tags=tuple(detail.get("imageTags", [])),
            pushed_at=detail.get("imagePushedAt"),
        )

    def by_digest(self, repository: str, digest: str) -> Image:
        """The image with this digest; ImageNotFound names the digest and repository."""
        return self._describe(repository, {"imageDigest": digest}, f"image {digest}")

    def by_tag(self, repository: str, tag: str) -> Image:
        return self._describe(repository, {"imageTag": tag}, f"tag {tag}")

    def newest(self, repository: str, tag_matches: Callable[[str], bool]) -> Image | None:
        """The most recently pushed tagged image with a tag the filter accepts, if any."""
        best: Image | None = None
        try:
            paginator = self._ecr.get_paginator("describe_images")
            pages = paginator.paginate(repositoryName=repository, filter={"tagStatus": "TAGGED"})
            for page in pages:
                for detail in page.get("imageDetails", []):
                    tags = tuple(t for t in detail.get("imageTags", []) if tag_matches(t))
                    pushed = detail.get("imagePushedAt")
                    if not tags or pushed is None:
                        continue
                    if best is None or best.pushed_at is None or pushed > best.pushed_at:
                        best = Image(
                            repository=repository,
                            registry_id=detail.get("registryId"),
                            digest=detail["imageDigest"],
                            tags=tags,
                            pushed_at=pushed,
                        )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise AwsCallFailed(f"ecr describe_images on {repository} failed: {code}") from exc
        return best
