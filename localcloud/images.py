"""Test application images: ``FROM scratch`` plus the host's static busybox, built locally.

Images are made with ``docker import`` of a small rootfs tarball (busybox + a www directory),
the exact equivalent of ``FROM scratch`` + ``COPY``, several times faster than the legacy builder.

Public API (stable; the local cloud and the host tests build on it):

- ``KINDS``: the image kinds: ``"good"`` (serves ``<app> release <n>`` at ``/`` and ``ok`` at
  ``/health``), ``"broken"`` (serves ``/`` but ``/health`` answers 404 and it logs why),
  ``"slow"`` (sleeps ``slow_seconds`` before listening), ``"crash"`` (logs an error and exits 3).
  Every kind listens on ``127.0.0.1:$PORT`` (default 8080) with busybox httpd, so it runs with
  ``--network host``. busybox httpd closes every connection after one response (no keep-alive).
- ``build_app_image(tag, release, kind="good", app="app", *, slow_seconds=3.0) -> str``: build and
  tag one image, return its image id (``sha256:...``). Every build is unique (a nonce file),
  so removing one test's images never touches another's.
- ``push_image(tag, registry, repository) -> str``: tag ``tag`` as ``<registry>/<repository>:<x>``,
  push it, return the manifest digest ``sha256:...``.
- ``publish_app_image(push_registry, pull_registry, repository, release, *, kind="good", app="app",
  slow_seconds=3.0) -> AppImage``: build, push through ``push_registry`` and return the by-digest
  reference as seen through ``pull_registry`` (the same registry, or its 5xx front), plus the id
  to clean up. The local copy is removed, so whoever runs it must pull it.
- ``release_body(app, release) -> str``: the exact body a good image serves at ``/``.
- ``remove_images(image_ids)``: force-remove images by id (ignores ones already gone).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass

KINDS = ("good", "broken", "slow", "crash")
BUSYBOX = "/bin/busybox"

_REPO_DIGESTS = "{{range .RepoDigests}}{{println .}}{{end}}"
_SERVE = 'exec /bin/busybox httpd -f -p "127.0.0.1:${PORT:-8080}" -h /www'


@dataclass(frozen=True)
class AppImage:
    """One published test image."""

    release: int
    kind: str
    reference: str  # <pull_registry>/<repository>@sha256:...
    digest: str
    image_id: str


def release_body(app: str, release: int) -> str:
    """What a good image answers at ``/``."""
    return f"{app} release {release}\n"


def _script(kind: str, slow_seconds: float) -> str:
    if kind == "good":
        return _SERVE
    if kind == "broken":
        return f"echo 'broken: health endpoint is missing, refusing to serve /health' >&2; {_SERVE}"
    if kind == "slow":
        return f"echo 'slow: warming up for {slow_seconds}s' >&2; /bin/busybox sleep {slow_seconds}; {_SERVE}"
    if kind == "crash":
        return "echo 'fatal: configuration missing, exiting' >&2; exit 3"
    raise ValueError(f"unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")


def _docker(*args: str, stdin: bytes | None = None) -> str:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(["docker", *args], input=stdin, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {err}")
    return proc.stdout.decode().strip()


def build_app_image(tag: str, release: int, kind: str = "good", app: str = "app", *,
                    slow_seconds: float = 3.0) -> str:
    """Build a busybox test app image tagged ``tag``; return its image id."""
    script = _script(kind, slow_seconds)
    # `docker import` of a rootfs tarball is FROM scratch + COPY in one step: one unique layer,
    # no cached parent image shared between builds, and several times faster than the legacy
    # builder here (docker build with a temp context: 1.2-2.8 s; import: 0.3-0.4 s).
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        files = {"www/index.html": release_body(app, release), "www/build-id": uuid.uuid4().hex}
        if kind != "broken":
            files["www/health"] = "ok\n"
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    entrypoint = '["/bin/busybox", "sh", "-c", ' + json.dumps(script) + "]"
    changes = [f"ENTRYPOINT {entrypoint}", f"LABEL test.kind={kind} test.release={release}"]
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    _docker(*args, "-", tag, stdin=buffer.getvalue())
    return _docker("image", "inspect", "--format", "{{.Id}}", tag)


def push_image(tag: str, registry: str, repository: str) -> str:
    """Push ``tag`` to ``registry/repository``; return the manifest digest."""
    remote = f"{registry}/{repository}:{uuid.uuid4().hex[:12]}"
    _docker("tag", tag, remote)
    try:
        _docker("push", remote)
        digests = _docker("image", "inspect", "--format", _REPO_DIGESTS, remote)
    finally:
        _docker("rmi", remote)
    prefix = f"{registry}/{repository}@"
    for line in digests.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    raise RuntimeError(f"no digest for {remote} after push: {digests!r}")


def publish_app_image(push_registry: str, pull_registry: str, repository: str, release: int, *,
                      kind: str = "good", app: str = "app", slow_seconds: float = 3.0) -> AppImage:
    """Build one image, push it, and return its by-digest reference through ``pull_registry``.

    The local image is removed again, so the agent really pulls it.
    """
    tag = f"deployer-test/{repository}:{release}-{kind}-{uuid.uuid4().hex[:8]}"
    image_id = build_app_image(tag, release, kind=kind, app=app, slow_seconds=slow_seconds)
    digest = push_image(tag, push_registry, repository)
    remove_images([image_id])
    return AppImage(release=release, kind=kind, reference=f"{pull_registry}/{repository}@{digest}",
                    digest=digest, image_id=image_id)


def remove_images(image_ids: list[str] | tuple[str, ...]) -> None:
    """Force-remove images by id; missing ones are fine."""
    for image_id in image_ids:
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)
