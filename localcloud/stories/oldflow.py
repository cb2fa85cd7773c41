"""The flow deployer replaces, for the benchmarks' baselines (development tooling only).

Deploy: a CI job visits the hosts one after another; on each it pulls the image, restarts the
app container on its fixed port (stop, remove, run), waits until the app answers its health
path, rewrites nginx's upstream and runs `nginx -t` and `nginx -s reload`.
Rollback: pull the old image, re-tag it `latest`, push it back to the registry, then redeploy
`latest` the same way. SSH and the CI runner's own start-up are not counted (they only add).
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from localcloud.hosts.sandbox import HostSandbox, free_port


def _run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


@dataclass
class OldHost:
    """A host as the old flow left it: nginx in front of one container on a fixed port."""

    sandbox: HostSandbox
    app_port: int
    container: str

    @classmethod
    def create(cls, name: str, root: Path) -> OldHost:
        sandbox = HostSandbox(name, root / name).start()
        return cls(sandbox, free_port(), f"{name}-app")

    def conf(self) -> Path:
        return Path(self.sandbox.config["nginx_conf_dir"]) / "app.conf"

    def nginx(self, *args: str) -> None:
        _run(
            "nginx",
            "-p",
            str(self.sandbox.nginx_prefix),
            "-c",
            self.sandbox.config["nginx_conf"],
            "-e",
            self.sandbox.config["nginx_error_log"],
            *args,
        )

    def deploy(self, image: str, health_path: str = "/health", timeout: float = 30.0) -> float:
        """Pull, restart, wait healthy, rewrite the upstream, test and reload nginx."""
        started = time.monotonic()
        _run("docker", "pull", "-q", image)
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)
        _run(
            "docker",
            "run",
            "-d",
            "--name",
            self.container,
            "--network",
            "host",
            "--init",
            "-e",
            f"PORT={self.app_port}",
            "--label",
            f"deployer.host={self.sandbox.host_id}",
            image,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.app_port}{health_path}", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.container} did not become healthy in {timeout}s")
            time.sleep(0.1)
        self.conf().write_text(
            "server {\n"
            f"    listen 127.0.0.1:{self.sandbox.listen_port};\n"
            f"    location / {{ proxy_pass http://127.0.0.1:{self.app_port}; }}\n"
            "}\n"
        )
        self.nginx("-t", "-q")
        self.nginx("-s", "reload")
        return time.monotonic() - started

    def teardown(self) -> None:
        self.sandbox.teardown()


def publish(
    push_registry: str, pull_registry: str, repository: str, release: int, *, app: str, pad_mb: int = 0
) -> str:
    """Build a test app image (padded to a realistic size), push it, drop the local copy;
    returns its by-digest reference through `pull_registry`."""
    from localcloud.cloud import pad_image  # noqa: PLC0415
    from localcloud.hosts.images import build_app_image, push_image, remove_images  # noqa: PLC0415

    tag = f"localcloud-oldflow/{repository}:{release}"
    ids = [build_app_image(tag, release, app=app)]
    if pad_mb:
        ids.append(pad_image(tag, pad_mb))
    digest = push_image(tag, push_registry, repository)
    remove_images(ids)
    return f"{pull_registry}/{repository}@{digest}"


def sequential_deploy(hosts: list[OldHost], image: str) -> float:
    """Seconds for the old flow to bring every host to `image`, one after another."""
    started = time.monotonic()
    for host in hosts:
        host.deploy(image)
    return time.monotonic() - started


def old_rollback(hosts: list[OldHost], registry: str, repository: str, old_image: str) -> float:
    """Seconds for the old rollback: pull the old image, re-tag it latest, push, redeploy."""
    started = time.monotonic()
    _run("docker", "pull", "-q", old_image)
    latest = f"{registry}/{repository}:latest"
    _run("docker", "tag", old_image, latest)
    _run("docker", "push", "-q", latest)
    sequential_deploy(hosts, latest)
    return time.monotonic() - started
