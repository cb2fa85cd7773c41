"""ECR's push event from a `docker push` to the local registry.

docker-registry posts its notifications (docker distribution's webhook: an envelope of events,
`action` push/pull, `target` with repository, tag, digest and media type) to this listener on
127.0.0.1. Each tagged manifest push becomes one call of `on_push(repository, tag, digest)`;
blob pushes, pulls and untagged manifests (buildx children) are dropped here, as ECR emits its
event per image, not per layer. The local cloud mirrors the image into moto's ECR and emits
`ECR Image Action` (`LocalCloud._registry_push`). Development tooling only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    }
)


def tagged_manifest_pushes(envelope: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(repository, tag, digest) of each tagged manifest push in a registry notification."""
    out = []
    for event in envelope.get("events") or []:
        target = event.get("target") or {}
        if event.get("action") != "push" or target.get("mediaType") not in MANIFEST_TYPES:
            continue
        if target.get("tag") and target.get("repository") and target.get("digest"):
            out.append((str(target["repository"]), str(target["tag"]), str(target["digest"])))
    return out


class PushEvents:
    """HTTP listener for the registry's notifications."""

    def __init__(self, on_push: Callable[[str, str, str], None]) -> None:
        self.on_push = on_push
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def start(self) -> PushEvents:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    envelope = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    envelope = {}
                # Answer first: the registry waits for us, and the push must not.
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                for push in tagged_manifest_pushes(envelope):
                    threading.Thread(target=listener.on_push, args=push, daemon=True).start()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
