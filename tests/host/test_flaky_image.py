"""The demo's bad release: healthy, yet it answers 503 to a share of requests, and the load
generator tells which release answered each of them."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from localcloud.hosts.images import build_app_image, remove_images
from localcloud.hosts.load import LoadGenerator
from localcloud.hosts.sandbox import free_port

pytestmark = pytest.mark.integration


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_flaky_release_passes_its_health_check_and_fails_a_fifth_of_its_requests() -> None:
    # Given a flaky image (default share 20 %) running as the agent runs an app
    tag = f"deployer-test/flaky:{uuid.uuid4().hex[:8]}"
    image_id = build_app_image(tag, 7, kind="flaky", app="shop")
    port = free_port()
    name = f"flaky-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", "host", "-e", f"PORT={port}", tag],
        check=True,
        capture_output=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(50):  # until it listens
            try:
                _status(base + "/health")
                break
            except OSError:
                subprocess.run(["sleep", "0.1"], check=True)
        # When the health check is asked ten times and 200 requests hit /
        health = [_status(base + "/health") for _ in range(10)]
        with LoadGenerator("127.0.0.1", port, rate=200, connections=4, max_seconds=1.0) as load:
            subprocess.run(["sleep", "1.2"], check=True)
        result = load.result
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        remove_images([image_id])
    # Then the health check always passes
    assert health == [200] * 10
    # and about one request in five got a 503, each attributed to release 7 as a 2xx is
    answered = result.by_release["shop release 7"]
    bad = result.errors_by_release["shop release 7"]
    assert answered == result.sent > 100, (answered, result.sent, dict(result.errors))
    assert set(result.errors) == {"http_503"}
    assert bad == result.errors["http_503"]
    assert 0.15 <= bad / answered <= 0.25, (bad, answered)
    # and the first error and the last answer of the release are timed, the first error first
    first_bad = result.first_error_at["shop release 7"]
    assert result.first_at["shop release 7"] <= first_bad <= result.last_at["shop release 7"]
    assert result.first_answer_after(first_bad, "shop release 7") is not None
    assert result.first_answer_after(first_bad, "shop release 8") is None
