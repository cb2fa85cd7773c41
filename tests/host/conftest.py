"""Fixtures for the host agent tests: a registry, published images and host sandboxes per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcloud.hosts.images import AppImage, publish_app_image, remove_images
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox
from tests.host.helpers import APP


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def publish(registry: Registry) -> Iterator[Callable[..., AppImage]]:
    """publish(release, kind="good") -> AppImage, pullable through the registry's front."""
    repository = f"{APP}-{uuid.uuid4().hex[:8]}"
    published: list[AppImage] = []

    def _publish(release: int, kind: str = "good", **kwargs: Any) -> AppImage:
        image = publish_app_image(registry.push_address, registry.address, repository, release,
                                  kind=kind, app=APP, **kwargs)
        published.append(image)
        return image

    yield _publish
    remove_images([image.image_id for image in published])


@pytest.fixture
def make_host(tmp_path: Path) -> Iterator[Callable[..., HostSandbox]]:
    """make_host(**host_settings) -> a started HostSandbox, torn down after the test."""
    created: list[HostSandbox] = []

    def _make(**settings: Any) -> HostSandbox:
        host_id = "t" + uuid.uuid4().hex[:8]
        sandbox = HostSandbox(host_id, tmp_path / host_id, **settings).start()
        created.append(sandbox)
        return sandbox

    yield _make
    for sandbox in created:
        sandbox.teardown(remove_images=True)


@pytest.fixture
def host(make_host: Callable[..., HostSandbox]) -> HostSandbox:
    return make_host()
