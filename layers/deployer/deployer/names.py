"""The one home of the names and patterns the parts share: AWS's vocabulary (regions, ECR's
registry host, image digests and tags) and the app name every resource is keyed by."""

from __future__ import annotations

APP_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
# Docker/ECR tag grammar: no shell metacharacters can pass.
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
# Commercial, China and GovCloud regions: us-east-1, cn-north-1, us-gov-west-1, eu-central-2.
REGION = r"[a-z]{2}(-[a-z]+)+-\d"
REGION_PATTERN = rf"^{REGION}$"


def ecr_registry(account: str | None, region: str) -> str:
    """The registry host of an account's ECR in a region (China's partition has its own domain)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{suffix}"
