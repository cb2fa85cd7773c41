"""Boot mode reads the release pointer with the real AWS CLI (against a moto server)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from localcloud.hosts.images import AppImage
from localcloud.hosts.sandbox import HostSandbox, free_port
from tests.host.helpers import APP, body

pytestmark = pytest.mark.integration

POINTER = f"/deployer/{APP}/release"
REGION = "us-east-1"


@pytest.fixture
def ssm_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def put_pointer(endpoint: str, image: AppImage) -> None:
    ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=REGION)
    value = {"app": APP, "release": image.release, "image": image.reference, "digest": image.digest,
             "tag": None, "source": "push", "updated_at": "2026-01-01T00:00:00Z"}
    ssm.put_parameter(Name=POINTER, Value=json.dumps(value), Type="String", Overwrite=True)


def boot_args(host: HostSandbox, baked: AppImage) -> list[str]:
    return [*host.swap_args(APP, baked.reference, baked.release), f"--pointer-parameter={POINTER}",
            f"--region={REGION}"]


def test_boot_brings_up_the_release_the_pointer_names_rather_than_the_baked_one(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage], ssm_endpoint: str) -> None:
    # Given user data baked with release 1 while the pointer already moved to release 2
    baked, current = publish(1), publish(2)
    put_pointer(ssm_endpoint, current)
    host = make_host(aws_command=["aws", "--endpoint-url", ssm_endpoint], pointer_timeout=30)
    # When the instance boots
    code, summary, _ = host.run_agent("boot", boot_args(host, baked))
    # Then it serves release 2
    assert code == 0, summary
    assert summary["release"] == 2
    assert host.get("/") == (200, body(2))


def test_boot_falls_back_to_the_baked_release_when_the_pointer_cannot_be_read(
        make_host: Callable[..., HostSandbox], publish: Callable[..., AppImage]) -> None:
    # Given an SSM endpoint that refuses connections
    baked = publish(1)
    dead = f"http://127.0.0.1:{free_port()}"
    host = make_host(aws_command=["aws", "--endpoint-url", dead], pointer_timeout=5)
    # When the instance boots
    code, summary, stderr = host.run_agent("boot", boot_args(host, baked))
    # Then it serves the baked release and says why
    assert code == 0, summary
    assert summary["release"] == 1
    assert "baked release used" in summary["message"]
    assert "pointer unreadable" in stderr
    assert host.get("/") == (200, body(1))
