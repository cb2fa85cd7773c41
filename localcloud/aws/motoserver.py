"""The AWS APIs: one moto server on 127.0.0.1, in this process (so its backends are reachable
for the gap-fillers in `localcloud.moto_gaps`), with fake credentials."""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from typing import Any

import boto3
from botocore.config import Config

ACCOUNT = "123456789012"
REGION = "us-east-1"

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """A ThreadedMotoServer bound to loopback on a free port."""

    def __init__(self, region: str = REGION) -> None:
        self.region = region
        self.port = 0
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - moto is heavy; load on start

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # moto reads the account from this variable; pin it so ARNs match the template's view.
        os.environ.setdefault("MOTO_ACCOUNT_ID", ACCOUNT)
        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {self.endpoint}") from None
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            # Backends are process-global: reset them so a later cloud in this process starts empty.
            req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5):
                    pass
            except OSError:
                pass
            self._server.stop()
            self._server = None

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this server with boto3."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
