"""`deployer wait APP --digest D [--tag T]`: find the release a push was admitted as, waiting for
the push event to be handled, so CI follows its own push and never the release before it.

A push is admitted with a marker naming its release (`markers.admission_key`: app, repository,
digest, tag), written in the same transaction as the release; reading that marker is exact,
whatever else was pushed or deployed meanwhile. A push the app never deploys (untagged, a tag
the filter refuses, a digest refused after a failure) is reported at once: no marker will come.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deployer import markers
from deployer.cli.context import Context, UsageError
from deployer.errors import ImageNotFound
from deployer.names import DIGEST_PATTERN, TAG_PATTERN

if TYPE_CHECKING:
    from deployer.models.config import AppConfig

POLL_SECONDS = 2.0


class NotDeployed(UsageError):
    """The push will never be admitted as a release of the app (exit 4, with the reason)."""


@dataclass(frozen=True)
class Awaited:
    """What a wait for a push found: its release, or None when the deadline came first."""

    digest: str
    tags: tuple[str, ...]
    release: int | None


def digest_argument(value: str) -> str:
    if not re.fullmatch(DIGEST_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an image digest (sha256: and 64 hex digits)")
    return value


def tag_argument(value: str) -> str:
    if not re.fullmatch(TAG_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an image tag")
    return value


def deployable_tags(ctx: Context, config: AppConfig, digest: str, tag: str | None) -> tuple[str, ...]:
    """The tags under which this push can be admitted; NotDeployed when there is none."""
    app = config.app
    filters = ", ".join(config.tag_filter)
    if tag is not None:
        if not config.accepts_tag(tag):
            raise NotDeployed(f"{app} does not deploy tag {tag}: it does not pass the tag filter ({filters})")
        return (tag,)
    try:
        image = ctx.deps.images.by_digest(config.repository, digest)
    except ImageNotFound as exc:
        raise NotDeployed(f"{exc}: push it first, or check the digest and the app") from exc
    if not image.tags:
        raise NotDeployed(
            f"{digest} is untagged in {config.repository}: an untagged push is never deployed "
            f"(deploy it on purpose with `deployer deploy {app} --digest {digest}`)"
        )
    passing = tuple(t for t in image.tags if config.accepts_tag(t))
    if not passing:
        raise NotDeployed(
            f"{app} does not deploy {digest}: none of its tags ({', '.join(image.tags)}) passes "
            f"the tag filter ({filters})"
        )
    return passing


def admitted_release(ctx: Context, config: AppConfig, digest: str, tags: tuple[str, ...]) -> int | None:
    """The release a push of `digest` under one of `tags` was admitted as, if it was."""
    for tag in tags:
        key = markers.admission_key(config.app, config.repository, digest, tag)
        number = ctx.deps.admissions.release_of(key)
        if number is not None:
            return number
    return None


def await_push(
    ctx: Context, config: AppConfig, digest: str, tags: tuple[str, ...], deadline: float
) -> Awaited:
    """Poll until the push is admitted (its release number) or the deadline; NotDeployed when the
    digest is refused for automatic deploys (it failed before: the push records nothing)."""
    announced = False
    while True:
        number = admitted_release(ctx, config, digest, tags)
        if number is not None:
            return Awaited(digest, tags, number)
        if digest in ctx.deps.state.get(config.app).refused_digests:
            # Read the marker again: the release may have been admitted, then failed and refused,
            # between the two reads.
            number = admitted_release(ctx, config, digest, tags)
            if number is not None:
                return Awaited(digest, tags, number)
            raise NotDeployed(
                f"{config.app} refuses {digest} for automatic deploys: it failed before "
                f"(deploy it on purpose with `deployer deploy {config.app} --digest {digest}`)"
            )
        if ctx.clock() >= deadline:
            return Awaited(digest, tags, None)
        if not announced and not ctx.json:
            ctx.console().print(f"waiting for {config.app} to admit the push of {digest} ({', '.join(tags)})")
            announced = True
        ctx.sleep(POLL_SECONDS)


def push_in_flight(ctx: Context, config: AppConfig) -> tuple[str, tuple[str, ...]] | None:
    """The newest image in ECR that passes the tag filter when no release has recorded its digest
    yet and it is not refused: a push whose event is still on its way (or lost: the reconciler
    admits it on its next tick, by the same rule). None when every such push is recorded."""
    newest = ctx.deps.images.newest(config.repository, config.accepts_tag)
    if newest is None:
        return None
    if newest.digest in ctx.deps.state.get(config.app).refused_digests:
        return None
    if ctx.deps.releases.find(config.app, lambda r: r.digest == newest.digest) is not None:
        return None
    return newest.digest, newest.tags
