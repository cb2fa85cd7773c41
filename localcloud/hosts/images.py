"""Test application images: ``FROM scratch`` plus the host's static busybox, built locally.

Images are made with ``docker import`` of a small rootfs tarball (busybox + a www directory),
the exact equivalent of ``FROM scratch`` + ``COPY``, several times faster than the legacy builder.

Public API (stable; the local cloud and the host tests build on it):

- ``KINDS``: the image kinds: ``"good"`` (serves ``<app> release <n>`` at ``/`` and ``ok`` at
  ``/health``), ``"broken"`` (serves ``/`` but ``/health`` answers 404 and it logs why),
  ``"slow"`` (sleeps ``slow_seconds`` before listening), ``"crash"`` (logs an error and exits 3),
  ``"crashloop"`` (serves like ``good`` for ``slow_seconds``, then logs an error and exits 3: with
  the agent's restart policy it crashes in a loop after passing the health gate), ``"flaky"``
  (a bad release that passes its health check: ``/health`` always answers 200, ``/`` answers
  ``503`` to a ``bad_share`` of requests (default 0.2), by request count: the n-th request fails
  when ``floor(n * bad_share)`` steps up, so every fifth at 20 % (requests that arrive at the
  same instant may read the same count, so under concurrency the share is near, not exact);
  every answer of ``/``, the 503s included, has the body ``<app> release <n>`` and the header
  ``X-Release: <n>``, so a client can tell which release answered even an error).
  Every kind listens on ``127.0.0.1:$PORT`` (default 8080) with busybox httpd, so it runs with
  ``--network host``; given a command (``docker run IMAGE CMD...``, a release task) it runs that
  instead. busybox httpd closes every connection after one response (no keep-alive).
- ``SERVERS``: the app servers a ``good`` image can run: ``"busybox"`` (above) and ``"gunicorn"``
  (Debian's python3 + gunicorn, 2 gthread workers: keeps upstream connections alive, drains
  gracefully on SIGTERM, listen backlog 2048). Both answer the same paths: ``/`` and ``/health``
  as above, ``POST ECHO_PATH`` echoes the request body, ``GET SLOW_PATH`` (``?sleep=S``, default
  1 s) answers the release body after sleeping. busybox images also answer ``GET STATUS_PATH``
  (``?code=NNN``) with status NNN.
- ``build_app_image(tag, release, kind="good", app="app", *, slow_seconds=3.0, server="busybox",
  bad_share=0.2) -> str``: build and tag one image, return its image id (``sha256:...``).
  Every build is unique (a nonce file), so removing one test's images never touches another's.
- ``debian_gunicorn_base() -> str``: the tag of the Debian (bookworm, minbase) + gunicorn base
  image, built with ``debootstrap`` from Debian's mirror on first use and then kept in the engine
  (tagged by the hash of its recipe, so a changed recipe builds anew).
- ``push_image(tag, registry, repository) -> str``: tag ``tag`` as ``<registry>/<repository>:<x>``,
  push it, return the manifest digest ``sha256:...``.
- ``publish_app_image(push_registry, pull_registry, repository, release, *, kind="good", app="app",
  slow_seconds=3.0, server="busybox", bad_share=0.2) -> AppImage``: build, push through ``push_registry`` and
  return the by-digest reference as seen through ``pull_registry`` (the same registry, or its
  5xx front), plus the id to clean up. The local copy is removed, so whoever runs it must pull it.
- ``release_body(app, release) -> str``: the exact body a good image serves at ``/``.
- ``remove_images(image_ids)``: force-remove images by id (ignores ones already gone).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KINDS = ("good", "broken", "slow", "crash", "crashloop", "flaky")
SERVERS = ("busybox", "gunicorn")
BUSYBOX = "/bin/busybox"
ECHO_PATH = "/cgi-bin/echo"
SLOW_PATH = "/cgi-bin/slow"

# busybox httpd runs these as CGI (it forks per request; the body arrives on stdin).
_ECHO_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
exec /bin/busybox head -c "${CONTENT_LENGTH:-0}"
"""
_SLOW_CGI = """#!/bin/sh
seconds=1
case "$QUERY_STRING" in sleep=[0-9]*) seconds=${QUERY_STRING#sleep=} ;; esac
/bin/busybox sleep "$seconds"
printf 'Content-Type: text/plain\\r\\n\\r\\n'
exec /bin/busybox cat /www/index.html
"""
# The flaky kind's `/` (busybox httpd runs /cgi-bin/index.cgi for `/` when there is no
# index.html). Each request appends one byte to a counter file (O_APPEND writes do not lose
# bytes to concurrent requests), so the file's size is the request's number. @PERMILLE@ is the
# bad share in thousandths. busybox passes a CGI's headers through as they are, so the CGI says
# itself that the connection closes after the body, as busybox's own answers do.
_FLAKY_CGI = """#!/bin/sh
printf x >> /tmp/requests
n=$(/bin/busybox stat -c %s /tmp/requests)
if [ $(( n * @PERMILLE@ / 1000 )) -gt $(( (n - 1) * @PERMILLE@ / 1000 )) ]; then
  printf 'Status: 503 Service Unavailable\\r\\n'
fi
printf 'Content-Type: text/plain\\r\\nContent-Length: @LENGTH@\\r\\nConnection: close\\r\\n'
printf 'X-Release: @RELEASE@\\r\\n\\r\\n'
exec /bin/busybox cat /release.txt
"""

# GET STATUS_PATH?code=NNN answers status NNN (100-599; 200 otherwise): a chosen share of 5xx
# from any kind. busybox httpd passes a CGI answer starting with a status line as it is.
STATUS_PATH = "/cgi-bin/status"
_STATUS_CGI = """#!/bin/sh
code=200
case "$QUERY_STRING" in code=[1-5][0-9][0-9]) code=${QUERY_STRING#code=} ;; esac
printf 'HTTP/1.1 %s Status\\r\\nContent-Type: text/plain\\r\\n' "$code"
printf 'Connection: close\\r\\n\\r\\nstatus %s\\n' "$code"
"""

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEPLOYER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_PACKAGES = ("python3-gunicorn",)
_BASE_LOCK = Path(tempfile.gettempdir()) / "deployer-debian-base.lock"

# The real app server's WSGI app; @APP@ and @RELEASE@ are filled in per build.
WSGI_APP = """import time
from urllib.parse import parse_qs

BODY = "@APP@ release @RELEASE@\\n".encode()


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ.get("REQUEST_METHOD", "GET")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if method == "POST" and path in ("/echo", "@ECHO@"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        payload = environ["wsgi.input"].read(length) if length else b""
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(payload)))])
        return [payload]
    if path == "/health":
        payload = b"ok\\n"
    elif path in ("/", "@SLOW@"):
        seconds = float(query.get("sleep", ["1" if path == "@SLOW@" else "0"])[0])
        if seconds > 0:
            time.sleep(min(seconds, 30.0))
        payload = BODY
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\\n"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
    return [payload]
"""
# gthread workers keep connections alive (2 s idle, gunicorn's default) and, on SIGTERM, finish
# in-flight requests within the graceful timeout (30 s default) before exiting.
_GUNICORN = ('exec python3 -m gunicorn --chdir /app --bind "127.0.0.1:${PORT:-8080}" --workers 2 '
             '--worker-class gthread --threads 16 --backlog 2048 --access-logfile - app:application')

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


def _add_file(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_status_cgi(tar: tarfile.TarFile) -> None:
    _add_file(tar, "www" + STATUS_PATH, _STATUS_CGI, 0o755)


def _script(kind: str, slow_seconds: float) -> str:
    if kind in ("good", "flaky"):
        return _SERVE
    if kind == "broken":
        return f"echo 'broken: health endpoint is missing, refusing to serve /health' >&2; {_SERVE}"
    if kind == "slow":
        return f"echo 'slow: warming up for {slow_seconds}s' >&2; /bin/busybox sleep {slow_seconds}; {_SERVE}"
    if kind == "crash":
        return "echo 'fatal: configuration missing, exiting' >&2; exit 3"
    if kind == "crashloop":
        serve = _SERVE.removeprefix("exec ")
        return (f"{serve} & /bin/busybox sleep {slow_seconds}; "
                f"echo 'fatal: crashed after {slow_seconds}s of serving' >&2; exit 3")
    raise ValueError(f"unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")


def _docker(*args: str, stdin: bytes | None = None) -> str:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(["docker", *args], input=stdin, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {err}")
    return proc.stdout.decode().strip()


def build_app_image(tag: str, release: int, kind: str = "good", app: str = "app", *,
                    slow_seconds: float = 3.0, server: str = "busybox", bad_share: float = 0.2) -> str:
    """Build a test app image tagged ``tag``; return its image id."""
    if not 0.0 <= bad_share <= 1.0:
        raise ValueError(f"bad_share must be between 0 and 1, got {bad_share!r}")
    if server == "gunicorn":
        if kind != "good":
            raise ValueError("the gunicorn app server only comes as the good kind")
        return _build_gunicorn_image(tag, release, app)
    if server != "busybox":
        raise ValueError(f"unknown app server {server!r}; expected one of {', '.join(SERVERS)}")
    script = _script(kind, slow_seconds)
    # `docker import` of a rootfs tarball is FROM scratch + COPY in one step: one unique layer,
    # no cached parent image shared between builds, and several times faster than the legacy
    # builder here (docker build with a temp context: 1.2-2.8 s; import: 0.3-0.4 s).
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")  # the CGI scripts' interpreter
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
        tar.addfile(link)
        files = {"www/index.html": release_body(app, release), "www/build-id": uuid.uuid4().hex}
        if kind != "broken":
            files["www/health"] = "ok\n"
        if kind == "flaky":
            del files["www/index.html"]  # `/` is the CGI below
            files["release.txt"] = release_body(app, release)
            tmp = tarfile.TarInfo("tmp")
            tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(tmp)
        for name, text in files.items():
            _add_file(tar, name, text)
        if kind == "flaky":
            cgi = (_FLAKY_CGI.replace("@PERMILLE@", str(round(bad_share * 1000)))
                   .replace("@RELEASE@", str(release))
                   .replace("@LENGTH@", str(len(release_body(app, release).encode()))))
            _add_file(tar, "www/cgi-bin/index.cgi", cgi, 0o755)
        _add_file(tar, "www" + ECHO_PATH, _ECHO_CGI, 0o755)
        _add_file(tar, "www" + SLOW_PATH, _SLOW_CGI, 0o755)
        _add_status_cgi(tar)
    # Arguments after the image (`docker run IMAGE CMD...`, a release task's argv) run instead of
    # the server, as with an app image whose entrypoint execs its arguments.
    script = 'if [ "$#" -gt 0 ]; then exec "$@"; fi; ' + script
    entrypoint = '["/bin/busybox", "sh", "-c", ' + json.dumps(script) + ', "app"]'
    label = f"LABEL test.kind={kind} test.release={release}"
    if kind == "flaky":
        label += f" test.bad_share={bad_share}"
    changes = [f"ENTRYPOINT {entrypoint}", label]
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    _docker(*args, "-", tag, stdin=buffer.getvalue())
    return _docker("image", "inspect", "--format", "{{.Id}}", tag)


def _build_gunicorn_image(tag: str, release: int, app: str) -> str:
    base = debian_gunicorn_base()
    source = (WSGI_APP.replace("@APP@", app).replace("@RELEASE@", str(release))
              .replace("@ECHO@", ECHO_PATH).replace("@SLOW@", SLOW_PATH))
    with tempfile.TemporaryDirectory(prefix="gunicorn-app-") as context:
        Path(context, "app.py").write_text(source)
        Path(context, "build-id").write_text(uuid.uuid4().hex)
        entrypoint = json.dumps(["/bin/sh", "-c", _GUNICORN])
        Path(context, "Dockerfile").write_text(
            f"FROM {base}\nCOPY app.py build-id /app/\nENTRYPOINT {entrypoint}\n"
            f"LABEL test.kind=good test.release={release} test.server=gunicorn\n")
        _docker("build", "-q", "-t", tag, context)
    return _docker("image", "inspect", "--format", "{{.Id}}", tag)


def _unmount_below(root: Path) -> None:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def debian_gunicorn_base() -> str:
    """Tag of the Debian + gunicorn base image; debootstrap builds it once (about a minute)."""
    recipe = json.dumps([DEBIAN_SUITE, "minbase", sorted(DEBIAN_PACKAGES), 1]).encode()
    tag = "deployer-test/debian-gunicorn:" + hashlib.sha256(recipe).hexdigest()[:12]
    _BASE_LOCK.touch(exist_ok=True)
    with _BASE_LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs build it once
        if subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                          check=False).returncode == 0:
            return tag
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        with tempfile.TemporaryDirectory(prefix="debian-base-") as tmp:
            root = Path(tmp, "root")
            try:
                proc = subprocess.run([debootstrap, "--variant=minbase",
                                       "--include=" + ",".join(DEBIAN_PACKAGES), DEBIAN_SUITE,
                                       str(root), DEBIAN_MIRROR],
                                      capture_output=True, text=True, check=False)
            finally:
                _unmount_below(root)  # never delete through a /proc or /sys left mounted
            if proc.returncode != 0:
                raise RuntimeError(f"debootstrap failed: {proc.stderr.strip()[-800:]}")
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                                   stdout=subprocess.PIPE)
            imported = subprocess.run(["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", tag],
                                      stdin=tar.stdout, capture_output=True, check=False)
            tar.wait()
            if imported.returncode != 0:
                raise RuntimeError("docker import of the Debian base failed: "
                                   + imported.stderr.decode(errors="replace")[-500:])
    return tag


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
                      kind: str = "good", app: str = "app", slow_seconds: float = 3.0,
                      server: str = "busybox", bad_share: float = 0.2) -> AppImage:
    """Build one image, push it, and return its by-digest reference through ``pull_registry``.

    The local image is removed again, so the agent really pulls it.
    """
    tag = f"deployer-test/{repository}:{release}-{kind}-{uuid.uuid4().hex[:8]}"
    image_id = build_app_image(tag, release, kind=kind, app=app, slow_seconds=slow_seconds,
                               server=server, bad_share=bad_share)
    digest = push_image(tag, push_registry, repository)
    remove_images([image_id])
    return AppImage(release=release, kind=kind, reference=f"{pull_registry}/{repository}@{digest}",
                    digest=digest, image_id=image_id)


def remove_images(image_ids: list[str] | tuple[str, ...]) -> None:
    """Force-remove images by id; missing ones are fine."""
    for image_id in image_ids:
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True, check=False)
