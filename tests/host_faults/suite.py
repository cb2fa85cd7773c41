"""The host fault suite: a real Docker engine, nginx, nftables and registry, with load.

Every case builds its own host sandbox (nginx under the systemd stand-in, as on a real host),
brings it to a starting release, then injects one fault and checks how the host heals:

- **Kill points**: the agent runs as SSM runs it, as the leader of its own process group; its
  docker and nft commands go through ``localcloud/hosts/killpoint.sh``, which holds the agent
  at the armed point, and the suite SIGKILLs the whole group there. Right after the kill the
  host must still serve one release (the old one, or the new one once the rule committed). Then
  the same command runs again, as SSM's retry or the reconciler's re-send would run it, and must
  end with the target release serving, exactly one container of the app, the lock free, and the
  state file agreeing with the traffic rule and the container.
- **Proxy**: the nginx master killed alone, then every nginx process, under load: nginx must
  come back and serve with no agent run; the time it took is reported (the goal: 5 s at most).
- **App**: the live container's process killed (docker restarts it), the container stopped by
  ``docker kill`` (an explicit stop: the next agent run replaces it), and an app that crashes in
  a loop after passing its health gate (the rollback to the retained release heals the host).
- **Engine restart**: on an engine of the case's own (``localcloud/hosts/engine.py``; the shared
  one is never stopped), restarted between two swaps: the app's container comes back by its
  restart policy with no agent run, and the next swap converges. Skipped, with the reason in the
  report, when this machine cannot start a second engine.

Load (GETs and POSTs whose echo is checked) runs through the host's nginx port during every
case that has a live release; failures are counted outside and inside deliberate outages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcloud.hosts.engine import Engine, EngineError
from localcloud.hosts.images import (
    ECHO_PATH,
    SLOW_PATH,
    AppImage,
    publish_app_image,
    release_body,
    remove_images,
)
from localcloud.hosts.load import LoadGenerator, LoadResult
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox

APP = "web"
KILLPOINT = Path(__file__).resolve().parents[2] / "localcloud" / "hosts" / "killpoint.sh"
RATE = 150.0  # requests/s through nginx, a quarter of them POSTs: bounded, few TIME_WAITs
CONNECTIONS = 10
REACH_TIMEOUT = 60.0


@dataclass(frozen=True)
class KillPoint:
    """Where to kill the agent: the ``when``/``match``/``nth``/``since`` of killpoint.sh."""

    name: str
    # boot (fresh host), swap (1 -> 2), prune (2 -> 3, retain 1), rollback (2 -> image of 1), abort
    # (2 swapped in with --keep-standby, so 1 runs as the standby -> image of 1: the fast path)
    flow: str
    when: str
    match: str
    since: str = ""
    nth: int = 1
    delay: float = 0.0  # seconds from reaching the point to the kill
    settings: dict[str, Any] = field(default_factory=dict)
    slow_request: bool = False  # a 2 s request in flight to the old release across the switch
    absent: bool = False  # the target image is removed from the engine first (a real pull)


# A health gate that needs 40 answers 0.1 s apart: the kill 0.4 s after `docker run` lands in it.
LONG_GATE = {"health_successes": 40}
COMMIT = "nft -f *"

KILL_POINTS = (
    KillPoint("swap/pull", "swap", "during", "docker pull *", absent=True),
    KillPoint("swap/start", "swap", "during", "docker run *"),
    KillPoint("swap/health", "swap", "notify", "docker run *", delay=0.4, settings=LONG_GATE),
    KillPoint("swap/switch-before-commit", "swap", "before", COMMIT),
    KillPoint("swap/switch-after-commit", "swap", "after", COMMIT),
    KillPoint("swap/after-state-save", "swap", "before", "docker *", since=COMMIT),
    KillPoint("swap/drain", "swap", "notify", "docker *", since=COMMIT, delay=0.4, slow_request=True),
    KillPoint("swap/stop", "swap", "during", "docker stop *"),
    KillPoint("swap/remove", "swap", "during", "docker rm *"),
    KillPoint("swap/prune", "prune", "during", "docker image rm *"),
    KillPoint("swap/after-prune-before-state-save", "prune", "after", "docker image rm *"),
    KillPoint("boot/pull", "boot", "during", "docker pull *", absent=True),
    KillPoint("boot/start", "boot", "during", "docker run *"),
    KillPoint("boot/health", "boot", "notify", "docker run *", delay=0.4, settings=LONG_GATE),
    KillPoint("boot/switch-before-commit", "boot", "before", COMMIT),
    KillPoint("boot/switch-after-commit", "boot", "after", COMMIT),
    KillPoint("boot/after-state-save", "boot", "before", "docker *", since=COMMIT),
    KillPoint("rollback/start", "rollback", "during", "docker run *"),
    KillPoint("rollback/switch-before-commit", "rollback", "before", COMMIT),
    KillPoint("rollback/switch-after-commit", "rollback", "after", COMMIT),
    KillPoint("rollback/after-state-save", "rollback", "before", "docker *", since=COMMIT),
    KillPoint("rollback/drain", "rollback", "notify", "docker *", since=COMMIT, delay=0.4,
              slow_request=True),
    KillPoint("rollback/stop", "rollback", "during", "docker stop *"),
    KillPoint("rollback/remove", "rollback", "during", "docker rm *"),
    # The abort's fast path: no pull, no start; one rule switch to the standby, then the converge.
    KillPoint("abort/switch-before-commit", "abort", "before", COMMIT),
    KillPoint("abort/switch-after-commit", "abort", "after", COMMIT),
    KillPoint("abort/after-state-save", "abort", "before", "docker *", since=COMMIT),
    KillPoint("abort/stop", "abort", "during", "docker stop *"),
)
OTHER_CASES = ("proxy/master", "proxy/all", "app/kill-process", "app/docker-kill", "app/crashloop",
               "engine/restart")
ALL_CASES = tuple(k.name for k in KILL_POINTS) + OTHER_CASES
# What CI runs (tests/host_faults/test_host_faults.py): the points where the host used to keep
# the old release, one before the commit, and the proxy killed whole.
CI_SLICE = ("swap/switch-after-commit", "swap/after-state-save", "swap/stop", "swap/remove",
            "abort/switch-after-commit", "proxy/all")


@dataclass
class CaseResult:
    name: str
    recovered: bool = False
    problems: list[str] = field(default_factory=list)
    after_kill: dict[str, Any] = field(default_factory=dict)
    rerun: dict[str, Any] = field(default_factory=dict)
    leftover_containers: int = 0
    failed_outside: int = 0
    failed_inside: int = 0
    outage_kind: str | None = None  # proxy | app | engine: the case's deliberate outage
    outage_seconds: float | None = None
    load_outage_seconds: float | None = None
    requests: int = 0
    skipped: str | None = None
    seconds: float = 0.0

    def brief(self) -> dict[str, Any]:
        data: dict[str, Any] = {"case": self.name, "recovered": self.recovered}
        for key in ("problems", "after_kill", "rerun", "outage_seconds", "load_outage_seconds",
                    "skipped"):
            value = getattr(self, key)
            if value not in (None, [], {}):
                data[key] = value
        data.update(requests=self.requests, failed_outside=self.failed_outside,
                    failed_inside=self.failed_inside, leftover_containers=self.leftover_containers,
                    seconds=round(self.seconds, 1))
        return data


def log(text: str) -> None:
    print(text, flush=True)


class Suite:
    """Images, a registry and the cases; ``run(names)`` returns the results."""

    def __init__(self, root: Path, agent_path: Path | None = None) -> None:
        self.root = root
        self.agent_path = agent_path
        self.images: dict[str, AppImage] = {}

    # --- fixtures ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def started(self) -> Iterator[Suite]:
        with Registry(self.root / "registry") as registry:
            repository = f"{APP}-faults-{uuid.uuid4().hex[:8]}"
            try:
                for key, release, kind in (("1", 1, "good"), ("2", 2, "good"), ("3", 3, "good"),
                                           ("loop", 4, "crashloop")):
                    self.images[key] = publish_app_image(
                        registry.push_address, registry.address, repository, release, kind=kind,
                        app=APP, slow_seconds=1.5)
                yield self
            finally:
                remove_images([image.image_id for image in self.images.values()])

    @contextlib.contextmanager
    def host(self, name: str, **settings: Any) -> Iterator[tuple[HostSandbox, Path]]:
        """A started sandbox whose docker and nft commands pass through killpoint.sh, and the
        directory that arms it."""
        host_id = "hf" + uuid.uuid4().hex[:8]
        case_dir = self.root / name.replace("/", "-")
        kill_dir = case_dir / "killpoint"
        kill_dir.mkdir(parents=True, exist_ok=True)
        sandbox = HostSandbox(host_id, case_dir / "host", supervise_proxy=True, agent_path=self.agent_path,
                              docker_command=["sh", str(KILLPOINT), str(kill_dir), "docker"],
                              nft_command=["sh", str(KILLPOINT), str(kill_dir), "nft"], **settings)
        if self.agent_path is not None:
            # Another agent (e.g. an older one, for comparison) refuses host settings it does not know.
            known = self.agent_path.read_text(encoding="utf-8")
            sandbox.config = {k: v for k, v in sandbox.config.items() if f'"{k}"' in known}
            sandbox.config_path.write_text(json.dumps(sandbox.config, indent=2) + "\n")
        sandbox.start()
        try:
            yield sandbox, kill_dir
        finally:
            sandbox.teardown()

    def agent(self, host: HostSandbox, image: AppImage, mode: str, release: int | None = None,
              **flags: Any) -> tuple[int, dict[str, Any], str]:
        args = host.swap_args(APP, image.reference, release or image.release, **flags)
        return host.run_agent(mode, args)

    # --- flows ---------------------------------------------------------------------------------

    def prepare(self, host: HostSandbox, flow: str) -> tuple[str | None, list[str], str, str]:
        """Bring ``host`` to the flow's starting release; returns (body served before, the
        agent arguments of the faulted command, its mode, the body it must end with)."""
        one, two, three = self.images["1"], self.images["2"], self.images["3"]
        if flow == "boot":
            return None, host.swap_args(APP, one.reference, 1), "boot", release_body(APP, 1)
        must(self.agent(host, one, "boot"), "boot to release 1")
        if flow == "abort":
            must(self.agent(host, two, "swap", keep_standby="true"), "canary swap to release 2")
            return release_body(APP, 2), host.swap_args(APP, one.reference, 3), "swap", release_body(APP, 1)
        if flow == "swap":
            return release_body(APP, 1), host.swap_args(APP, two.reference, 2), "swap", release_body(APP, 2)
        must(self.agent(host, two, "swap"), "swap to release 2")
        if flow == "prune":
            args = host.swap_args(APP, three.reference, 3, retain=1)
            return release_body(APP, 2), args, "swap", release_body(APP, 3)
        # rollback: release 3 is the image of release 1, retained on the host
        return release_body(APP, 2), host.swap_args(APP, one.reference, 3), "swap", release_body(APP, 1)

    # --- kill points ---------------------------------------------------------------------------

    def kill_case(self, point: KillPoint) -> CaseResult:
        result = CaseResult(point.name)
        with self.host(point.name, **point.settings) as (host, kill_dir):
            before, args, mode, wanted = self.prepare(host, point.flow)
            target_image = args[1].split("=", 1)[1]
            target_release = int(args[2].split("=", 1)[1])
            if point.absent:
                subprocess.run(["docker", "image", "rm", target_image], capture_output=True, check=False)
            (kill_dir / "armed").write_text(f"{point.when}\n{point.nth}\n{point.match}\n{point.since}\n")
            load = self.load(host) if before is not None else None
            try:
                if load is not None:
                    time.sleep(0.5)
                slow: list[tuple[int, str]] = []
                slow_thread = None
                if point.slow_request:
                    slow_thread = threading.Thread(
                        target=lambda: slow.append(host.get(f"{SLOW_PATH}?sleep=2", timeout=10)))
                    slow_thread.start()
                    time.sleep(0.2)
                proc = host.start_agent(mode, args, new_session=True)
                reached = wait_for(lambda: (kill_dir / "reached").exists() or proc.poll() is not None,
                                   REACH_TIMEOUT)
                if not reached or proc.poll() is not None:
                    code, summary, stderr = host.finish_agent(proc)
                    result.problems.append(f"kill point never reached; agent exited {code}: "
                                           f"{summary.get('message', stderr[-300:])}")
                    return result
                time.sleep(point.delay)
                os.killpg(proc.pid, signal.SIGKILL)
                host.finish_agent(proc, timeout=10)
                (kill_dir / "armed").unlink()
                # Right away: the host serves one release, the old one or (once the rule
                # committed) the new one; a fresh host serves nothing or the new one.
                answers = {host.get("/", timeout=2.0) for _ in range(3)}
                result.after_kill = self.snapshot(host)
                result.after_kill["served"] = sorted(f"{status} {text.strip()[:40]}"
                                                     for status, text in answers)
                allowed = {(200, wanted)} | ({(200, before)} if before else set())
                if len(answers) != 1 or not (answers <= allowed or (before is None and all(
                        status != 200 for status, _ in answers))):
                    result.problems.append(f"right after the kill the host served {sorted(answers)}")
                # The same command again, as SSM's retry or the reconciler's re-send runs it.
                code, summary, stderr = host.run_agent(mode, args)
                result.rerun = {"exit": code, "outcome": summary.get("outcome"),
                                "warning": summary.get("warning"),
                                "message": str(summary.get("message", ""))[:160]}
                if code != 0 or summary.get("warning") or summary.get("release") != target_release:
                    result.problems.append(f"re-run: exit {code}, {summary.get('warning')}, "
                                           f"{summary.get('message', stderr[-300:])}")
                if slow_thread is not None:
                    slow_thread.join(12)
                    if slow != [(200, before)]:
                        result.problems.append(f"the request in flight at the switch got {slow}")
                self.check_converged(host, result, target_release, target_image, wanted)
            finally:
                if load is not None:
                    self.count_load(load.stop(), result, None)
        result.recovered = not result.problems
        return result

    def snapshot(self, host: HostSandbox) -> dict[str, Any]:
        """What the host looks like: its containers and their states, the rule, the state file."""
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=deployer.host={host.host_id}",
                              "--format", "{{.Names}} {{.State}}"], capture_output=True, text=True,
                             check=False).stdout
        state = host.state(APP) or {}
        return {"containers": sorted(line.split(" ", 1)[0].rsplit("-", 1)[1] + " " + line.split(" ", 1)[1]
                                     for line in out.splitlines() if line),
                "rule": colour_of(host, rule_port(host)), "state_release": state.get("release")}

    def check_converged(self, host: HostSandbox, result: CaseResult, release: int, image: str,
                        wanted: str) -> None:
        answers = {host.get("/", timeout=2.0) for _ in range(3)}
        if answers != {(200, wanted)}:
            result.problems.append(f"after the re-run the host served {sorted(answers)}")
        state = host.state(APP) or {}
        containers = host.containers(all_states=True)
        result.leftover_containers = max(0, len(containers) - 1)
        if containers != [state.get("container")]:
            result.problems.append(f"containers after the re-run: {containers}")
        if state.get("release") != release or state.get("image") != image:
            result.problems.append(f"state says release {state.get('release')}")
        if rule_port(host) != state.get("port"):
            result.problems.append(f"the rule sends traffic to {rule_port(host)}, "
                                   f"the state says {state.get('port')}")
        digest = subprocess.run(["docker", "inspect", "--format",
                                 '{{index .Config.Labels "deployer.digest"}}', str(state.get("container"))],
                                capture_output=True, text=True, check=False).stdout.strip()
        if digest != state.get("digest"):
            result.problems.append(f"the live container runs {digest[:19]}, "
                                   f"the state says {str(state.get('digest'))[:19]}")
        missing = [e.get("release") for e in state.get("retained", [])
                   if subprocess.run(["docker", "image", "inspect", str(e.get("image"))],
                                     capture_output=True, check=False).returncode != 0]
        if missing:
            result.problems.append(f"the state retains releases whose image is gone: {missing}")
        if not lock_free(host):
            result.problems.append("the host lock is still held")
        # The meter attributes new requests to the last switch line: it must name what serves.
        switches = Path(host.config["state_dir"]) / APP / "switches.jsonl"
        lines = switches.read_text().splitlines() if switches.exists() else []
        last = json.loads(lines[-1]) if lines else {}
        if (last.get("release"), last.get("port")) != (state.get("release"), state.get("port")):
            result.problems.append(f"the last switch line says {last}, the host serves release "
                                   f"{state.get('release')} on {state.get('port')}")

    # --- load ----------------------------------------------------------------------------------

    @staticmethod
    def load(host: HostSandbox) -> LoadGenerator:
        return LoadGenerator("127.0.0.1", host.listen_port, rate=RATE, connections=CONNECTIONS,
                             max_seconds=180, timeout=15, post_ratio=0.25, post_path=ECHO_PATH).start()

    @staticmethod
    def count_load(load: LoadResult, result: CaseResult, window: tuple[float, float] | None) -> None:
        """Failures inside the deliberate outage ``window`` (sent before it ended, ended after it
        began) and outside it; the span of the failures is the outage the load saw."""
        result.requests = load.sent
        inside = [r for r in load.records if r.error and window is not None
                  and r.sent_at <= window[1] and r.ended_at >= window[0]]
        result.failed_inside = len(inside)
        result.failed_outside = load.failed - len(inside)
        if inside:
            span = max(r.ended_at for r in inside) - min(r.sent_at for r in inside)
            result.load_outage_seconds = round(span, 3)
        elif window is not None:
            result.load_outage_seconds = 0.0

    # --- proxy, app, engine --------------------------------------------------------------------

    def proxy_case(self, name: str, everything: bool) -> CaseResult:
        result = CaseResult(name, outage_kind="proxy")
        with self.host(name) as (host, _):
            must(self.agent(host, self.images["1"], "boot"), "boot to release 1")
            load = self.load(host)
            window = None
            try:
                time.sleep(1.0)
                pid = host.nginx_pid()
                assert pid is not None
                workers = children_of(pid)
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                if everything:
                    for worker in workers:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker, signal.SIGKILL)
                back = wait_for(lambda: host.nginx_pid() not in (None, pid)
                                and host.get("/", timeout=0.5) == (200, release_body(APP, 1)), 15, 0.02)
                recovered = time.monotonic()
                result.outage_seconds = round(recovered - killed, 3)
                window = (killed, recovered)
                if not back:
                    result.problems.append(f"nginx not back and serving after {result.outage_seconds}s")
                time.sleep(1.0)
                report = host.run_agent("diagnose", [f"--app={APP}"])[1]
                if report.get("layer") != "none":
                    result.problems.append(f"diagnose after the restart: layer {report.get('layer')}")
                result.leftover_containers = max(0, len(host.containers(all_states=True)) - 1)
            finally:
                self.count_load(load.stop(), result, window)
        result.recovered = not result.problems
        return result

    def app_kill_case(self, name: str) -> CaseResult:
        """The live container's process killed (as by the OOM killer): docker's restart policy
        brings it back with no agent run. ``docker kill`` instead is an explicit stop to Docker
        (no restart policy applies, not even ``always``): nothing on the host restarts it, and
        the next agent run (the same swap re-sent, or a boot) replaces it."""
        result = CaseResult(name, outage_kind="app")
        explicit = name == "app/docker-kill"
        with self.host(result.name) as (host, _):
            must(self.agent(host, self.images["1"], "boot"), "boot to release 1")
            must(self.agent(host, self.images["2"], "swap"), "swap to release 2")
            container = str((host.state(APP) or {}).get("container"))
            load = self.load(host)
            window = None
            try:
                time.sleep(1.0)
                killed = time.monotonic()
                if explicit:
                    subprocess.run(["docker", "kill", container], capture_output=True, check=True)
                else:
                    pid = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", container],
                                         capture_output=True, text=True, check=True).stdout.strip()
                    os.kill(int(pid), signal.SIGKILL)
                back = wait_for(lambda: host.get("/", timeout=0.5) == (200, release_body(APP, 2)),
                                2.0 if explicit else 15.0, 0.02)
                result.after_kill = {"served_again_without_an_agent_run": back,
                                     "restarts": restart_count(container)}
                if explicit:
                    report = host.run_agent("diagnose", [f"--app={APP}"])[1]
                    result.after_kill["diagnose_layer"] = report.get("layer")
                    if back or report.get("layer") != "app":
                        result.problems.append(f"after docker kill: {result.after_kill}")
                elif not back:
                    result.problems.append("docker did not restart the killed app process")
                code, summary, _ = self.agent(host, self.images["2"], "swap")
                window = (killed, time.monotonic())
                result.outage_seconds = round((window[1] if explicit else killed) - killed, 3)
                result.rerun = {"exit": code, "outcome": summary.get("outcome"),
                                "warning": summary.get("warning")}
                if code != 0 or summary.get("warning"):
                    result.problems.append(f"re-run: {result.rerun}")
                self.check_converged(host, result, 2, self.images["2"].reference, release_body(APP, 2))
            finally:
                self.count_load(load.stop(), result, window)
        if not explicit and result.load_outage_seconds is not None:
            result.outage_seconds = result.load_outage_seconds
        result.recovered = not result.problems
        return result

    def crashloop_case(self) -> CaseResult:
        """An app that passes its gate, then crashes in a loop: docker keeps restarting it,
        diagnose names the app, and the rollback to the retained release heals the host."""
        result = CaseResult("app/crashloop", outage_kind="app")
        loop = self.images["loop"]
        with self.host(result.name) as (host, _):
            must(self.agent(host, self.images["1"], "boot"), "boot to release 1")
            load = self.load(host)
            window = None
            try:
                time.sleep(0.5)
                swapped = time.monotonic()
                must(self.agent(host, loop, "swap"), "swap to the crash-looping release 4")
                container = str((host.state(APP) or {}).get("container"))
                looping = wait_for(lambda: restart_count(container) >= 2, 30, 0.1)
                if not looping:
                    result.problems.append("the crash-looping app was not restarted by docker")
                layers = set()
                for _ in range(40):
                    layers.add(host.run_agent("diagnose", [f"--app={APP}"])[1].get("layer"))
                    if "app" in layers:
                        break
                    time.sleep(0.1)
                result.after_kill = {"restarts": restart_count(container),
                                     "diagnose_layers": sorted(map(str, layers))}
                if "app" not in layers:
                    result.problems.append(f"diagnose never named the app layer: {layers}")
                # The control plane's answer: a rollback to the release before (retained image).
                code, summary, _ = self.agent(host, self.images["1"], "swap", release=5)
                window = (swapped, time.monotonic())
                result.rerun = {"exit": code, "outcome": summary.get("outcome"),
                                "warning": summary.get("warning"),
                                "pull_attempts": summary.get("pull_attempts")}
                if code != 0 or summary.get("warning"):
                    result.problems.append(f"rollback: {result.rerun}")
                time.sleep(0.5)
                self.check_converged(host, result, 5, self.images["1"].reference, release_body(APP, 1))
            finally:
                self.count_load(load.stop(), result, window)
        result.recovered = not result.problems
        return result

    def engine_case(self) -> CaseResult:
        """The engine restarted between two swaps (as at a reboot or an engine upgrade)."""
        result = CaseResult("engine/restart", outage_kind="engine")
        engine = Engine("hf" + uuid.uuid4().hex[:8])
        try:
            engine.start()
        except (EngineError, OSError, subprocess.SubprocessError) as exc:
            engine.stop()
            result.skipped = f"no engine of its own could be started here: {exc}"
            result.recovered = True
            return result
        saved = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = engine.url  # the agent, the sandbox and the checks use it
        try:
            with self.host(result.name) as (host, _):
                must(self.agent(host, self.images["1"], "boot"), "boot to release 1")
                must(self.agent(host, self.images["2"], "swap"), "swap to release 2")
                container = str((host.state(APP) or {}).get("container"))
                load = self.load(host)
                window = None
                try:
                    time.sleep(1.0)
                    stopped = time.monotonic()
                    engine.restart()
                    back = wait_for(lambda: host.get("/", timeout=0.5) == (200, release_body(APP, 2)),
                                    30, 0.02)
                    window = (stopped, time.monotonic())
                    result.outage_seconds = round(window[1] - stopped, 3)
                    result.after_kill = {"served_again_without_an_agent_run": back,
                                         "containers": host.containers(all_states=True) == [container]}
                    if not back:
                        result.problems.append("release 2 did not serve again after the engine restart")
                    time.sleep(0.5)
                    code, summary, stderr = self.agent(host, self.images["3"], "swap")
                    result.rerun = {"exit": code, "outcome": summary.get("outcome"),
                                    "warning": summary.get("warning")}
                    if code != 0 or summary.get("warning"):
                        result.problems.append("the swap after the restart: "
                                               + str(summary.get("message", stderr[-300:])))
                    self.check_converged(host, result, 3, self.images["3"].reference, release_body(APP, 3))
                finally:
                    self.count_load(load.stop(), result, window)
        finally:
            if saved is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved
            engine.stop()
        result.recovered = not result.problems
        return result

    # --- running -------------------------------------------------------------------------------

    def run_case(self, name: str) -> CaseResult:
        started = time.monotonic()
        points = {k.name: k for k in KILL_POINTS}
        if name in points:
            result = self.kill_case(points[name])
        elif name == "proxy/master":
            result = self.proxy_case(name, everything=False)
        elif name == "proxy/all":
            result = self.proxy_case(name, everything=True)
        elif name in ("app/kill-process", "app/docker-kill"):
            result = self.app_kill_case(name)
        elif name == "app/crashloop":
            result = self.crashloop_case()
        else:
            result = self.engine_case()
        result.seconds = time.monotonic() - started
        return result


def report(results: list[CaseResult]) -> dict[str, Any]:
    ran = [r for r in results if r.skipped is None]
    kill_points = [r for r in ran if r.name.split("/")[0] in ("swap", "boot", "rollback", "abort")]
    proxy = {r.name.split("/")[1]: r.outage_seconds for r in ran if r.outage_kind == "proxy"}
    return {
        "cases": len(ran),
        "kill_points": len(kill_points),
        "failed_requests": {
            "outside_outages": sum(r.failed_outside for r in ran),
            "proxy_outage": sum(r.failed_inside for r in ran if r.outage_kind == "proxy"),
            "app_outage": sum(r.failed_inside for r in ran if r.outage_kind == "app"),
            "engine_outage": sum(r.failed_inside for r in ran if r.outage_kind == "engine"),
        },
        "requests": sum(r.requests for r in ran),
        "leftover_containers": sum(r.leftover_containers for r in ran),
        "not_recovered": sum(1 for r in ran if not r.recovered),
        "not_recovered_cases": [r.name for r in ran if not r.recovered],
        "proxy_outage_seconds": proxy,
        "proxy_outage_seconds_seen_by_load": {r.name.split("/")[1]: r.load_outage_seconds
                                              for r in ran if r.outage_kind == "proxy"},
        "app_outage_seconds": {r.name.split("/")[1]: r.outage_seconds for r in ran if r.outage_kind == "app"},
        "engine_outage_seconds": next((r.outage_seconds for r in ran if r.outage_kind == "engine"), None),
        "skipped": {r.name: r.skipped for r in results if r.skipped},
    }


# --- helpers ------------------------------------------------------------------------------------


def must(outcome: tuple[int, dict[str, Any], str], what: str) -> None:
    code, summary, stderr = outcome
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}): {summary.get('message')} {stderr[-500:]}")


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def rule_port(host: HostSandbox) -> int | None:
    out = subprocess.run(["nft", "list", "chain", "ip", host.config["nft_table"], "output"],
                         capture_output=True, text=True, check=False).stdout
    marker = "dnat to 127.0.0.1:"
    if marker not in out:
        return None
    return int(out.split(marker, 1)[1].split()[0])


def colour_of(host: HostSandbox, port: int | None) -> str | None:
    for colour in ("blue", "green"):
        if port == host.config[colour + "_port"]:
            return colour
    return None


def lock_free(host: HostSandbox) -> bool:
    path = Path(host.config["state_dir"]) / APP / "agent.lock"
    if not path.exists():
        return True
    fd = os.open(str(path), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def restart_count(container: str) -> int:
    out = subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", container],
                         capture_output=True, text=True, check=False).stdout.strip()
    return int(out) if out.isdigit() else 0


def run(names: list[str], root: Path,
        agent_path: Path | None = None) -> tuple[list[CaseResult], dict[str, Any]]:
    results: list[CaseResult] = []
    with Suite(root, agent_path).started() as suite:
        for name in names:
            result = suite.run_case(name)
            results.append(result)
            log("case " + json.dumps(result.brief(), separators=(",", ":")))
    return results, report(results)
