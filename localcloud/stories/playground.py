"""`make up` / `make down`: a local cloud left running in the background, to try things by hand.

    python -m localcloud.stories.playground up       start it (in the background) unless it is up
    python -m localcloud.stories.playground down     stop it and remove everything it created
    python -m localcloud.stories.playground status   exit 0 when it is up and answering

`up` starts `serve` as a daemon (its own session, stdin closed, output to
`.localcloud/playground.log`) and returns once the playground is ready:
- the moto server, the registry, the stack (`localcloud.aws.stack`: SAM transform + create_stack),
  the Lambda, EventBridge, SSM-agent and Auto Scaling stand-ins (`localcloud.cloud.LocalCloud`);
- the app `web` (tag filter `v*`) on a 3-host group running `web:v1`;
- `web:broken` (fails its health check) in the registry and in ECR, NOT deployed: its push
  event arrives, and on-image-push ignores it because `broken` does not pass the tag filter.
  `deployer deploy web --tag broken` deploys it on purpose (an operator deploy names its image).
Both images are pushed with `docker push` to the registry, as a user does, so they take the
same path as a user's push: registry notification → ECR → `ECR Image Action` → on-image-push.

It writes `.localcloud/env`: shell `export` lines with the endpoint, fake credentials, region,
the stack's name (`DEPLOYER_STACK`: the CLI reads the outputs itself), the rollback function
(`DEPLOYER_ROLLBACK_FUNCTION`) and `DEPLOYER_LOCAL_REGISTRY`. The app containers' logs are shipped to
CloudWatch Logs as the awslogs driver would (`localcloud.aws.app_logs`), for `deployer logs`.
The env file appears when the playground is ready; `up` waits for it. `down` sends SIGTERM (the
daemon removes hosts, containers, nginx, the registry and moto) and, should the daemon not exit,
kills its session and removes what it left (containers by label, nginx and registry processes by
path), then deletes `.localcloud/`.
Development tooling only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("LOCALCLOUD_PLAYGROUND_DIR", str(ROOT / ".localcloud")))
APP = "web"
HOSTS = 3
TAG_FILTER = ["v*"]
READY_TIMEOUT = 600.0
STOP_TIMEOUT = 90.0


def paths(state: Path = STATE) -> dict[str, Path]:
    return {
        "pid": state / "playground.pid",
        "env": state / "env",
        "log": state / "playground.log",
        "info": state / "playground.json",
        "cloud": state / "cloud",
    }


# ----------------------------------------------------------------------------- environment
def cli_environment(cloud: Any) -> dict[str, str]:
    """What a shell needs to use the `deployer` CLI and `aws` against this cloud: endpoint,
    credentials, region and the stack's name (the CLI reads the outputs itself), and the rollback
    function, so operator actions go through the stack's function as they would on AWS."""
    assert cloud.stack is not None
    # The CLI's cache of the outputs lives and goes with this cloud: a new one has new names.
    env = {
        **cloud.moto.env(),
        "DEPLOYER_STACK": cloud.stack.name,
        "DEPLOYER_STACK_CACHE": str(cloud.root / "stack-cache.json"),
    }
    function = cloud.stack.outputs.get("RollbackFunctionName")
    if function:
        env["DEPLOYER_ROLLBACK_FUNCTION"] = function
    return env


def env_file_text(variables: dict[str, str]) -> str:
    lines = [
        "# The local playground (make up). Source it: `source .localcloud/env`; make down removes it.",
        "unset AWS_PROFILE AWS_DEFAULT_PROFILE",
        f"export PATH={shlex.quote(str(ROOT / '.venv' / 'bin'))}:\"$PATH\"",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    return "\n".join(lines) + "\n"


def read_env(path: Path) -> dict[str, str]:
    """The variables of an env file written by `env_file_text`."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line and not line.startswith("export PATH="):
            name, value = line[len("export "):].split("=", 1)
            out[name] = shlex.split(value)[0] if value else ""
    return out


# ----------------------------------------------------------------------------- the daemon
def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def docker_push(cloud: Any, kind: str, release: int, tag: str) -> str:
    """Build a test image and `docker push` it to the registry as `<app>:<tag>`, like a user."""
    from localcloud.hosts.images import build_app_image, remove_images  # noqa: PLC0415

    assert cloud.registry is not None
    local = f"localcloud/{APP}:{tag}-{kind}"
    image_id = build_app_image(local, release, kind=kind, app=APP)
    remote = f"{cloud.registry.push_address}/{APP}:{tag}"
    _docker("tag", local, remote)
    try:
        _docker("push", "-q", remote)
    finally:
        _docker("rmi", remote)
        remove_images([image_id])  # hosts must pull it
    return remote


def _wait_release(cloud: Any, tag: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        rels = [r for r in cloud.releases(APP) if r.get("tag") == tag]
        return rels[-1] if rels else None

    cloud.wait_for(lambda: (found() or {}).get("status") in statuses, timeout, f"{APP}:{tag} {statuses}")
    rel = found()
    assert rel is not None
    return rel


def serve(state: Path = STATE, hosts: int = HOSTS) -> int:
    """The playground process: start, set up, write the env file, run until SIGTERM."""
    from localcloud.aws.app_logs import AppLogForwarder  # noqa: PLC0415
    from localcloud.cloud import LocalCloud, Timeline  # noqa: PLC0415

    p = paths(state)
    p["pid"].write_text(f"{os.getpid()}\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cloud = LocalCloud(root_dir=p["cloud"], timeline=Timeline(echo=True), registry_events=True)
    forwarder: AppLogForwarder | None = None
    try:
        cloud.start()
        fleet = cloud.fleet
        assert fleet is not None
        forwarder = AppLogForwarder(
            cloud.moto.client("logs"), lambda: [h.instance_id for h in fleet.live()]
        ).start()
        cloud.create_app(APP, tag_filter=TAG_FILTER, health_timeout=10)
        docker_push(cloud, "good", 1, "v1")
        _wait_release(cloud, "v1", {"SUCCEEDED"})
        cloud.scale(APP, hosts)
        assert cloud.fleet is not None
        cloud.fleet.wait_settled(300)
        cloud.settle(120)
        docker_push(cloud, "broken", 2, "broken")
        cloud.settle(60)
        assert cloud.registry is not None
        variables = {**cli_environment(cloud), "DEPLOYER_LOCAL_REGISTRY": cloud.registry.push_address}
        info = {
            "pid": os.getpid(),
            "endpoint": cloud.moto.endpoint,
            "registry": cloud.registry.push_address,
            "registry_pull": cloud.registry.address,
            "stack": cloud.stack.name if cloud.stack else None,
            "hosts": {h.instance_id: h.sandbox.listen_port for h in cloud.fleet.live(f"{APP}-asg")},
        }
        p["info"].write_text(json.dumps(info, indent=2) + "\n")
        tmp = p["env"].with_suffix(".tmp")
        tmp.write_text(env_file_text(variables))
        tmp.replace(p["env"])  # the env file appearing means "ready"
        cloud.log(f"playground ready: {json.dumps(info)}")
        while not stop.wait(1.0):
            pass
        cloud.log("playground stopping (SIGTERM)")
        return 0
    except Exception as exc:  # the log is the only place a daemon can report to
        cloud.log(f"playground failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        if forwarder is not None:
            forwarder.stop()
        cloud.stop()
        p["pid"].unlink(missing_ok=True)


# ----------------------------------------------------------------------------- up / down
def _recorded_pid(state: Path) -> int | None:
    """The daemon's pid from its pid file (the daemon removes the file when it stops cleanly)."""
    try:
        return int(paths(state)["pid"].read_text().strip())
    except (OSError, ValueError):
        return None


def _pid(state: Path) -> int | None:
    """The daemon's pid while it runs."""
    pid = _recorded_pid(state)
    return pid if pid is not None and _alive(pid) else None


def healthy(state: Path = STATE) -> bool:
    """Up = the daemon is alive, the env file is written and its endpoint answers."""
    env_path = paths(state)["env"]
    if _pid(state) is None or not env_path.exists():
        return False
    endpoint = read_env(env_path).get("AWS_ENDPOINT_URL", "")
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=3):
            return True
    except (OSError, ValueError):
        return False


def up(state: Path = STATE, hosts: int = HOSTS) -> int:
    p = paths(state)
    if healthy(state):
        print(f"playground already up (pid {_pid(state)}); source {_rel(p['env'])}")
        return 0
    if _pid(state) is not None:
        print(f"playground process {_pid(state)} is running but not ready; see {_rel(p['log'])}")
        print("wait for it, or run make down first")
        return 1
    if state.exists():
        down(state, quiet=True)  # leftovers of a playground that died
    state.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(p["log"], "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localcloud.stories.playground", "serve", "--hosts", str(hosts),
             "--dir", str(state)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    print(f"playground starting (pid {proc.pid}); log: {_rel(p['log'])}")
    shown = 0
    while True:
        shown = _echo_log(p["log"], shown)
        if p["env"].exists() and healthy(state):
            break
        if proc.poll() is not None:
            _echo_log(p["log"], shown)
            log_name = _rel(p["log"])
            print(f"playground failed to start (exit {proc.returncode}); see {log_name}", file=sys.stderr)
            down(state, quiet=True)
            return 1
        if time.monotonic() - started > READY_TIMEOUT:
            print(f"playground not ready after {READY_TIMEOUT:.0f}s; see {_rel(p['log'])}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    env = read_env(p["env"])
    print(
        f"playground up in {time.monotonic() - started:.0f}s: moto {env['AWS_ENDPOINT_URL']}, "
        f"registry {env['DEPLOYER_LOCAL_REGISTRY']}, app {APP} on {hosts} hosts (v1); "
        f"web:broken pushed, not deployed"
    )
    print(f"  source {_rel(p['env'])}; deployer status {APP}; make down when done")
    return 0


def _echo_log(log: Path, offset: int) -> int:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    if data:
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("  ["):  # timeline lines only; tracebacks stay in the log
                print(line, flush=True)
    return offset + len(data)


def down(state: Path = STATE, quiet: bool = False) -> int:
    p = paths(state)
    if not state.exists():
        if not quiet:
            print("playground is not up")
        return 0
    pid = _pid(state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            print(f"playground {pid} did not stop in {STOP_TIMEOUT:.0f}s; killing it", file=sys.stderr)
    # A pid file still there: the daemon was killed, crashed or is stuck; its session goes too.
    _sweep(state, _recorded_pid(state))
    # Images the hosts pulled from the playground's registry.
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(p["info"].read_text())
    _remove_registry_images([str(info[k]) for k in ("registry", "registry_pull") if info.get(k)])
    import shutil  # noqa: PLC0415

    shutil.rmtree(state, ignore_errors=True)
    if not quiet:
        print("playground down: hosts, containers, nginx, registry, moto and .localcloud/ removed")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def processes_using(state: Path) -> list[int]:
    """Processes started from the state directory or holding a file in it. nginx's workers are
    the reason for the second test: their command line names no path, and they outlive a master
    killed with SIGKILL, still listening."""
    marker = str(state.resolve())
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            files = [os.readlink(fd) for fd in (proc_dir / "fd").iterdir()]
        except OSError:
            continue
        if marker in cmdline or any(f.startswith(marker + "/") for f in files):
            found.append(int(proc_dir.name))
    return found


def _sweep(state: Path, pid: int | None) -> None:
    """Whatever a killed or crashed daemon left: its session's processes (`pid`: a daemon that
    would not stop), processes running from the state directory (nginx, docker-registry), the
    hosts' containers and nft tables. After a clean stop there is nothing left to find."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for stray in processes_using(state):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(stray, signal.SIGKILL)
    hosts_dir = paths(state)["cloud"] / "hosts"
    host_ids = [d.name for d in hosts_dir.iterdir() if d.is_dir()] if hosts_dir.exists() else []
    for host_id in host_ids:
        names = subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=deployer.host={host_id}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)
        subprocess.run(["nft", "delete", "table", "ip", "deployer_" + host_id.replace("-", "_")],
                       capture_output=True, check=False)


def _remove_registry_images(registries: list[str]) -> None:
    if not registries:
        return
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}} {{.ID}}"],
        capture_output=True, text=True, check=False,
    ).stdout
    prefixes = tuple(f"{r}/" for r in registries)
    ids = sorted({line.split()[1] for line in out.splitlines() if line.startswith(prefixes)})
    if ids:
        subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True, check=False)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.stories.playground")
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--hosts", type=int, default=HOSTS)
    parser.add_argument("--dir", type=Path, default=STATE)
    args = parser.parse_args(argv)
    state = args.dir.resolve()
    if args.command == "up":
        return up(state, args.hosts)
    if args.command == "down":
        return down(state)
    if args.command == "serve":
        return serve(state, args.hosts)
    if healthy(state):
        print(f"playground up (pid {_pid(state)}); source {_rel(paths(state)['env'])}")
        return 0
    print("playground is not up")
    return 1


if __name__ == "__main__":
    sys.exit(main())
