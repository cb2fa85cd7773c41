"""config_release: a config-only release against an image release, on the demo's fleet size.

The local cloud runs the real stack on 4 hosts; the app pins one Parameter Store SecureString
and one Secrets Manager secret. Taking turns, ROUNDS times each: an image release (a new image
pushed; clock from the ECR push event) and a config-only release (both secrets get a new version,
then the rollback function's `deploy_config` action, as `deployer deploy --config-only` sends it;
clock from the request). Each clock stops when the release is SUCCEEDED and every host runs it
(its digest, and for a config-only release the new secret versions, which the hosts' containers
carry as a label). MaxConcurrency 100%, as the demo.
Prints progress on stderr and
`BENCH {"hosts": 4, "image_release_seconds": [..], "config_release_seconds": [..], "ratio": r}`
(ratio: median config-only / median image release).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from localcloud.aws.host_role import grant_host_secrets
from localcloud.cloud import LocalCloud, Timeline

APP = "bench"
HOSTS = 4
ROUNDS = 3


def _log(text: str) -> None:
    print(f"config_release: {text}", file=sys.stderr, flush=True)


def _release(cloud: LocalCloud, number: int) -> dict[str, Any] | None:
    return next((r for r in cloud.releases(APP) if int(r["release"]) == number), None)


def _newest(cloud: LocalCloud) -> dict[str, Any] | None:
    rows = cloud.releases(APP)
    return max(rows, key=lambda r: int(r["release"])) if rows else None


def _hosts_on(cloud: LocalCloud, release: int, hosts: int) -> bool:
    releases = cloud.host_releases(APP)
    return len(releases) == hosts and (not hosts or set(releases.values()) == {release})


def _config_labels() -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "--filter", f"label=deployer.app={APP}", "--format", '{{.Label "deployer.config"}}'],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def _wait_succeeded(cloud: LocalCloud, after: int, what: str, hosts: int = HOSTS) -> int:
    """The number of the first release newer than `after` once it SUCCEEDED on every host."""

    def done() -> bool:
        newest = _newest(cloud)
        return (
            newest is not None
            and int(newest["release"]) > after
            and newest.get("status") == "SUCCEEDED"
            and _hosts_on(cloud, int(newest["release"]), hosts)
        )

    cloud.wait_for(done, 300, what)
    newest = _newest(cloud)
    assert newest is not None
    return int(newest["release"])


def measure() -> dict[str, Any]:
    image_seconds: list[float] = []
    config_seconds: list[float] = []
    with LocalCloud(timeline=Timeline(echo=False)) as cloud:
        assert cloud.bus is not None
        assert cloud.fleet is not None
        ssm, sm = cloud.moto.client("ssm"), cloud.moto.client("secretsmanager")
        ssm.put_parameter(Name="/bench/db-password", Value="db-0", Type="SecureString")
        sm.create_secret(Name="bench/api-key", SecretString="api-0")
        grant_host_secrets(
            cloud.moto.client("iam"), parameter_names=["/bench/db-password"], secret_names=["bench/api-key"]
        )
        config = cloud.create_app(APP, max_concurrency="100%", max_errors="0", retain=3)
        cloud.put_app({
            **config,
            "environment": {"MODE": "bench"},
            "secrets": {"DB_PASSWORD": "ssm:/bench/db-password", "API_KEY": "secretsmanager:bench/api-key"},
        })
        cloud.push(APP, "v0", 1, app=APP)
        current = _wait_succeeded(cloud, 0, "v0", hosts=0)  # the group is empty yet
        cloud.scale(APP, HOSTS)
        cloud.fleet.wait_settled(600)
        cloud.settle(300)
        for n in range(1, ROUNDS + 1):
            pushed = cloud.push(APP, f"v{n}", n + 1, app=APP, emit=False)
            started = time.monotonic()
            cloud.bus.put_event(pushed.event)
            current = _wait_succeeded(cloud, current, f"image release v{n}")
            image_seconds.append(round(time.monotonic() - started, 2))
            cloud.settle(300)
            labels = _config_labels()
            ssm.put_parameter(Name="/bench/db-password", Value=f"db-{n}", Type="SecureString", Overwrite=True)
            sm.put_secret_value(SecretId="bench/api-key", SecretString=f"api-{n}")
            started = time.monotonic()
            cloud.invoke("RollbackFunction", {"action": "deploy_config", "app": APP, "reason": "bench"})
            current = _wait_succeeded(cloud, current, f"config-only release {n}")
            config_seconds.append(round(time.monotonic() - started, 2))
            rel = _release(cloud, current)
            assert rel is not None, current
            assert rel.get("source") == "config", rel
            assert _config_labels().isdisjoint(labels), "the hosts' containers still carry the old config"
            cloud.settle(300)
            _log(f"round {n}: image release {image_seconds[-1]} s, config-only {config_seconds[-1]} s")
    ratio = round(statistics.median(config_seconds) / statistics.median(image_seconds), 2)
    return {
        "hosts": HOSTS,
        "image_release_seconds": image_seconds,
        "config_release_seconds": config_seconds,
        "ratio": ratio,
    }


def main() -> None:
    print("BENCH " + json.dumps(measure()), flush=True)


if __name__ == "__main__":
    main()
