"""Domain exceptions. Adapters raise these `from` the botocore error they translate, so a
handler logs one line and emits one metric without string-matching AWS messages."""

from __future__ import annotations


class DeployerError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidSettings(DeployerError):
    """An environment variable is missing or malformed."""


class InvalidAppConfig(DeployerError):
    """An app configuration failed validation; the message names each bad field."""


class InvalidEvent(DeployerError):
    """An incoming event does not have the shape or values we accept."""


class AppNotFound(DeployerError):
    """No app is registered under this name or repository."""


class ReleaseNotFound(DeployerError):
    """The release (number, tag or digest) is not in the app's history."""


class DeployInProgress(DeployerError):
    """Another invocation holds the app's deploy lock."""


class LockLost(DeployerError):
    """The lock is no longer held by this owner (lease expired and taken over, or released)."""


class ImageNotFound(DeployerError):
    """The image digest no longer exists in the registry."""


class LaunchTemplateMismatch(DeployerError):
    """The Auto Scaling group does not use the launch template the app config names."""


class GroupNotFound(DeployerError):
    """The app's Auto Scaling group does not exist."""


class AwsCallFailed(DeployerError):
    """An AWS call failed after the client's retries; the cause is chained."""


class UserDataTooLarge(DeployerError):
    """The rendered user data exceeds EC2's 16 KB limit."""


class RolloutFailed(DeployerError):
    """A deploy could not be started; what it changed was put back and the release is FAILED."""
