"""Fixtures for the host agent tests: a registry, published images and host sandboxes per test."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from localcloud.hosts.images import AppImage, publish_app_image, remove_images
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox, free_port
from tests.host.helpers import APP

SECRETS_REGION = "us-east-1"


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


class SecretStore:
    """Parameter Store and Secrets Manager in a moto server the hosts' AWS CLI talks to."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=SECRETS_REGION)
        self.secretsmanager = boto3.client("secretsmanager", endpoint_url=endpoint,
                                           region_name=SECRETS_REGION)

    def parameter(self, name: str, *values: str) -> list[str]:
        """A SecureString parameter with one version per value; returns the versions."""
        versions = []
        for value in values:
            answer = self.ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
            versions.append(str(answer["Version"]))
        return versions

    def secret(self, name: str, *values: str) -> list[str]:
        """A Secrets Manager secret with one version per value; returns the VersionIds."""
        versions = [self.secretsmanager.create_secret(Name=name, SecretString=values[0])["VersionId"]]
        versions += [self.secretsmanager.put_secret_value(SecretId=name, SecretString=v)["VersionId"]
                     for v in values[1:]]
        return [str(v) for v in versions]

    def host_settings(self) -> dict[str, Any]:
        """Host settings whose AWS CLI reaches this store."""
        return {"aws_command": ["aws", "--endpoint-url", self.endpoint], "region": SECRETS_REGION,
                "config_timeout": 30}


@pytest.fixture
def secret_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretStore]:
    """A moto server holding the release's secrets; the hosts fetch them with the real AWS CLI."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": SECRETS_REGION}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield SecretStore(endpoint)
    # moto's backends live in this process: empty them for the next test's server
    reset = urllib.request.Request(endpoint + "/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=5).close()
    server.stop()
