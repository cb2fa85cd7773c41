"""rollback_latency: one-call rollback of the local fleet beside the old rollback.

Both flows use the same kind of image: the busybox test app plus a random layer of
BENCH_IMAGE_MB megabytes (default 100; 0 for the bare 1 MB app).
The local cloud runs the real stack on a fleet of HOSTS hosts (MaxConcurrency 100%) that ran
v1 and then v2. The clock runs from invoking the rollback function until every host serves v1
again: a pointer move plus a swap to the image the hosts retained (no pull). The baseline, in
the same run, is the old rollback on as many plain hosts: pull the old image, re-tag it
`latest`, push it, redeploy host after host (pull, restart, nginx reload) (`localcloud.oldflow`).
Prints `BENCH {"hosts": n, "seconds": x, "baseline_seconds": y}`.
Goal: at most 5 s and at least 10 times faster than the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localcloud import breakdown
from localcloud.cloud import LocalCloud, Timeline
from localcloud.oldflow import OldHost, old_rollback, publish, sequential_deploy

HOSTS = 5
APP = "bench"
# App images are rarely 1 MB: both flows use images with a random layer of this size.
IMAGE_MB = int(os.environ.get("BENCH_IMAGE_MB", "100"))


def _log(text: str) -> None:
    print(f"rollback_latency: {text}", file=sys.stderr, flush=True)


def _wait_succeeded(cloud: LocalCloud, tag: str) -> dict:
    def done() -> bool:
        rel = [r for r in cloud.releases(APP) if r.get("tag") == tag]
        return bool(rel) and rel[-1].get("status") == "SUCCEEDED"

    cloud.wait_for(done, 300, f"{tag} to succeed")
    return [r for r in cloud.releases(APP) if r.get("tag") == tag][-1]


def measure(hosts: int) -> dict:
    with (
        tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp,
        LocalCloud(timeline=Timeline(echo=False)) as cloud,
    ):
        assert cloud.registry is not None
        assert cloud.fleet is not None
        cloud.create_app(APP, max_concurrency="100%", max_errors="0", retain=3)
        cloud.push(APP, "v1", 1, app=APP, pad_mb=IMAGE_MB)
        v1 = _wait_succeeded(cloud, "v1")
        cloud.scale(APP, hosts)
        cloud.fleet.wait_settled(600)
        cloud.settle(300)
        cloud.push(APP, "v2", 2, app=APP, pad_mb=IMAGE_MB)
        _wait_succeeded(cloud, "v2")
        cloud.settle(300)
        _log(f"{hosts} hosts on v2 ({IMAGE_MB} MB images); rolling back to v1")
        started = time.monotonic()
        answer = cloud.invoke("RollbackFunction", {"app": APP, "reason": "benchmark"})
        invoked = time.monotonic()
        cloud.wait_for(lambda: set(cloud.host_digests(APP).values()) == {v1["digest"]}, 300, "hosts on v1")
        converged = time.monotonic()
        seconds = round(converged - started, 2)
        cloud.settle(120)
        report = breakdown.rollout(list(cloud.commands().values()), started, converged)
        report["invoke_s"] = round(invoked - started, 3)
        _log("breakdown " + json.dumps(report))
        _log("mean agent phases " + json.dumps(breakdown.mean_phases(report)))
        _log(f"rollback answered {json.dumps(answer)[:160]}; every host on v1 after {seconds} s")

        old_hosts = [OldHost.create(f"old{n}", Path(tmp)) for n in range(hosts)]
        try:
            reg = cloud.registry
            one = publish(reg.push_address, reg.address, "oldflow", 1, app=APP, pad_mb=IMAGE_MB)
            two = publish(reg.push_address, reg.address, "oldflow", 2, app=APP, pad_mb=IMAGE_MB)
            sequential_deploy(old_hosts, one)
            sequential_deploy(old_hosts, two)
            # The CI runner doing the rollback does not have the old image.
            subprocess.run(["docker", "rmi", "-f", one], capture_output=True, check=False)
            baseline = round(old_rollback(old_hosts, reg.address, "oldflow", one), 2)
            _log(f"old rollback (pull, re-tag, push, redeploy {hosts} hosts): {baseline} s")
        finally:
            for host in old_hosts:
                host.teardown()
            subprocess.run(
                ["docker", "rmi", "-f", f"{cloud.registry.address}/oldflow:latest"],
                capture_output=True,
                check=False,
            )
    return {"hosts": hosts, "seconds": seconds, "baseline_seconds": baseline}


def main() -> None:
    result = measure(HOSTS)
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
