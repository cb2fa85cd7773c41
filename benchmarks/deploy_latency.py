"""deploy_latency: push → fleet converged, for 1, 5 and 10 hosts, beside the old flow.

The local cloud runs the real stack (handlers, agent, document, user data): one group grows
from 1 to 5 to 10 hosts (new hosts boot through user data and the launch hook), and at each
size a new image is pushed; the clock runs from the ECR push event to the moment the release
is SUCCEEDED and every host serves the new image. The app rolls with MaxConcurrency 100%.
Both flows use the busybox test app plus a random layer of BENCH_IMAGE_MB megabytes
(default 100; 0 for the bare 1 MB app).
The baseline, in the same run on the same machine, is the old flow on as many plain hosts:
one host after another, pull, restart, nginx reload (`localcloud.stories.oldflow`).
Prints progress on stderr and `BENCH {"hosts": [...], "seconds": [...], "sequential_seconds": [...]}`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from localcloud.cloud import LocalCloud, Timeline
from localcloud.stories import breakdown
from localcloud.stories.oldflow import OldHost, publish, sequential_deploy

SIZES = [1, 5, 10]
APP = "bench"
# App images are rarely 1 MB: both flows use images with a random layer of this size.
IMAGE_MB = int(os.environ.get("BENCH_IMAGE_MB", "100"))


def _log(text: str) -> None:
    print(f"deploy_latency: {text}", file=sys.stderr, flush=True)


def _converged(cloud: LocalCloud, digest: str, tag: str) -> bool:
    rel = [r for r in cloud.releases(APP) if r.get("tag") == tag]
    if not rel or rel[-1].get("status") != "SUCCEEDED":
        return False
    digests = cloud.host_digests(APP)
    return bool(digests) and set(digests.values()) == {digest}


def _succeeded_at(cloud: LocalCloud, tag: str, started: float) -> float | None:
    """Seconds from ``started`` to the release's SUCCEEDED record, from its wall-clock stamp."""
    rel = [r for r in cloud.releases(APP) if r.get("tag") == tag]
    stamp = rel[-1].get("finished_at") if rel else None
    try:
        at = datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return None
    return round(at - (time.time() - (time.monotonic() - started)), 3)


def measure(sizes: list[int]) -> dict[str, list]:
    seconds: list[float] = []
    sequential: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp,
        LocalCloud(timeline=Timeline(echo=False)) as cloud,
    ):
        assert cloud.registry is not None
        assert cloud.bus is not None
        assert cloud.fleet is not None
        cloud.create_app(APP, max_concurrency="100%", max_errors="0", retain=3)
        cloud.push(APP, "v0", 1, app=APP)
        cloud.wait_for(lambda: any(r.get("status") == "SUCCEEDED" for r in cloud.releases(APP)), 120, "v0")
        old_hosts = [OldHost.create(f"old{n}", Path(tmp)) for n in range(max(sizes))]
        try:
            reg = cloud.registry
            first = publish(reg.push_address, reg.address, "oldflow", 1, app=APP, pad_mb=IMAGE_MB)
            sequential_deploy(old_hosts, first)  # the old flow's hosts start on a release too
            for step, size in enumerate(sizes, start=1):
                cloud.scale(APP, size)
                cloud.fleet.wait_settled(600)
                cloud.settle(300)
                tag = f"v{step}"
                pushed = cloud.push(APP, tag, step + 1, app=APP, emit=False, pad_mb=IMAGE_MB)
                started = time.monotonic()
                cloud.bus.put_event(pushed.event)
                cloud.wait_for(
                    lambda p=pushed, t=tag: _converged(cloud, p.digest, t), 600, f"{size} hosts on {tag}"
                )
                converged = time.monotonic()
                seconds.append(round(converged - started, 2))
                report = breakdown.rollout(list(cloud.commands().values()), started, converged)
                report["release_succeeded_s"] = _succeeded_at(cloud, tag, started)
                _log(f"{size} host(s) breakdown " + json.dumps(report))
                _log(f"{size} host(s) mean agent phases " + json.dumps(breakdown.mean_phases(report)))
                cloud.settle(300)
                image = publish(reg.push_address, reg.address, "oldflow", step + 1, app=APP, pad_mb=IMAGE_MB)
                sequential.append(round(sequential_deploy(old_hosts[:size], image), 2))
                _log(
                    f"{size} host(s): push→converged {seconds[-1]} s; sequential old flow {sequential[-1]} s"
                )
        finally:
            for host in old_hosts:
                host.teardown()
    return {"hosts": sizes, "seconds": seconds, "sequential_seconds": sequential}


def main() -> None:
    result = measure(SIZES)
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
