#!/usr/bin/env python3
"""Deployer host agent: bring this host to one release of one app without dropping a request.

usage:
  agent.py swap --app APP --image REF@sha256:DIGEST --release N --port PORT [options]
  agent.py boot --app APP --image REF@sha256:DIGEST --release N --port PORT [options]
                [--pointer-parameter NAME --region REGION]
  agent.py task --app APP --image REF@sha256:DIGEST --release N --argv BASE64 --timeout SECONDS
                [--env-file, --docker-options, --log-driver, --log-options, --registry-login]
  agent.py status [--app APP]
  agent.py diagnose --app APP [--health-path PATH]
  agent.py meter --app APP [--region REGION]

options (swap and boot):
  --health-path PATH        health endpoint, default /health
  --health-timeout SECONDS  time allowed to become healthy, default 60
  --env-file PATH           env file for the container, default none
  --docker-options OPTS     space-separated --name=value docker run options (allow-listed)
  --log-driver DRIVER       json-file | local | awslogs | journald | none, default json-file
  --log-options K=V,...     log driver options
  --retain N                release images kept for instant rollback, default 3
  --registry-login MODE     ecr | none, default none
  --release-config B64      the release's environment and pinned secret versions (base64 JSON,
                            docs/host-secrets.md); default none
  --keep-standby true|false keep the replaced release's container running, drained, as the
                            standby (a canary stage); default false

swap: lock, pull (with retries), start the new colour beside the old one, gate on health,
switch traffic atomically (nftables DNAT of a stable port that nginx proxies to), then converge:
drain, stop and remove every other container of the app, prune old images. A release already
serving is not swapped again, but the host still converges. With --keep-standby true the replaced
release's container keeps running, drained, on its own colour (the standby; at most 2 containers of
the app: live and standby); without it the standby goes too. A release the standby container runs
(same image digest and config), running and answering its health path, is switched back to with
one rule change: no pull, no start (instant abort). boot: install the nginx site and the
switching table if absent, optionally read the release pointer (falling back to the given
release), then the same steps. Every run keeps nginx supervised (a systemd drop-in that restarts
it whenever it dies). status: print this host's state. diagnose: read-only checks of one app
(docker engine, disk, containers, health, the proxy's live target, registry reachability) as one
JSON line naming the failing layer: docker, app, proxy, registry or none; always exits 0.
meter: runs until stopped; every meter_interval seconds (host.json) sends the requests, 5xx and
latency the proxy logged for the app, per release and app-wide, to CloudWatch (namespace
Deployer/Proxy) with one PutMetricData; prints nothing on stdout.
task: the release's task, once: pull, then the argv (base64 of a JSON list) in a one-shot
container of the image with the app container's env, log driver and docker options, stopped at
--timeout; the result is recorded per (app, release) in the state dir, and a repeated task for
the same release is answered from that record, never run again.

stdout: exactly one JSON line (the summary); logs go to stderr.

exit codes:
  0 none     live, or already live
  2 input    a parameter failed validation; nothing touched
  3 lock     another invocation held the host lock too long; nothing touched
  4 pull     login or pull failed after retries; nothing touched
  5 start    the new container would not start or exited; it was removed
  6 health   the health gate failed; the new container was removed
  7 switch   switching traffic failed; the old release serves
  8 config   a pinned secret of the release could not be fetched or used; nothing touched
  9 task     the release task exited non-zero or ran past its timeout (stopped); nothing else touched
A problem after the switch (stopping or removing another container, pruning images) exits 0: the new release
serves, and the summary names it in "warning" ("cleanup"), so SSM reports Success and the host never
counts toward the command's MaxErrors.

Host settings come from /etc/deployer/host.json (path overridable with DEPLOYER_HOST_CONFIG).
Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import contextlib
import datetime
import errno
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSION = 1
EXIT_CODES = {
    "none": 0,
    "input": 2,
    "lock": 3,
    "pull": 4,
    "start": 5,
    "health": 6,
    "switch": 7,
    "config": 8,
    "task": 9,
}
# Problems after the new release went live: exit 0, named in the summary's "warning".
WARNING_CLASSES = ("cleanup",)

DOCKER_OPTION_NAMES = (
    "cpus",
    "cpu-shares",
    "memory",
    "memory-reservation",
    "memory-swap",
    "pids-limit",
    "shm-size",
    "ulimit",
    "user",
    "read-only",
    "tmpfs",
    "stop-timeout",
    "cap-drop",
    "security-opt",
)
# The values each option may take: only limits, a non-root user, a read-only root, noexec tmpfs
# mounts, dropped capabilities and no-new-privileges. Nothing that lifts a limit (-1, unlimited,
# memlock/rtprio ulimits), runs as root (uid or gid 0) or relaxes confinement (seccomp,
# apparmor, label, systempaths); no label either, so the agent's deployer.* labels stay its own.
_SIZE = "[1-9][0-9]{0,12}[bkmg]?"
_TMPFS_OPTION = "(rw|ro|noexec|nosuid|nodev|size=" + _SIZE + "|mode=[0-7]{3,4})"
DOCKER_OPTION_VALUES = {
    # never 0 (docker: no CPU limit at all)
    "cpus": "([1-9][0-9]{0,2}([.][0-9]{1,3})?|0[.]([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))",
    "cpu-shares": "[1-9][0-9]{0,5}",
    "memory": _SIZE,
    "memory-reservation": _SIZE,
    "memory-swap": _SIZE,
    "pids-limit": "[1-9][0-9]{0,6}",
    "shm-size": _SIZE,
    "ulimit": "(nofile|nproc|core|fsize|stack|cpu|as|data|locks|msgqueue|sigpending)"
              "=[0-9]{1,10}(:[0-9]{1,10})?",
    "user": "[1-9][0-9]{0,9}(:[1-9][0-9]{0,9})?",
    "read-only": "true",
    "tmpfs": "/[A-Za-z0-9._/-]{1,200}(:" + _TMPFS_OPTION + "(," + _TMPFS_OPTION + ")*)?",
    "stop-timeout": "[1-9][0-9]{0,3}",  # never 0: the old container gets a grace period
    "cap-drop": "[A-Za-z_]{1,40}",
    "security-opt": "no-new-privileges(:true|=true)?",
}
_OPTION = "--(" + "|".join(re.escape(n) + "=" + DOCKER_OPTION_VALUES[n] for n in DOCKER_OPTION_NAMES) + ")"
_LOG_PAIR = "[a-z0-9-]+=[A-Za-z0-9._/:-]+"

# Same patterns as the swap document's allowedPattern values (docs/architecture.md).
PATTERNS = {
    "app": r"^[a-z][a-z0-9-]{0,39}$",
    "image": r"^[a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?/[a-z0-9][a-z0-9._/-]*@sha256:[a-f0-9]{64}$",
    "release": r"^[1-9][0-9]{0,8}$",
    "port": r"^[1-9][0-9]{0,4}$",
    "health_path": r"^/[A-Za-z0-9._~/-]{0,200}$",
    "health_timeout": r"^[1-9][0-9]{0,3}$",
    "env_file": r"^(/[A-Za-z0-9._/-]{1,200})?$",
    "docker_options": "^(" + _OPTION + "( " + _OPTION + ")*)?$",
    "log_driver": r"^(json-file|local|awslogs|journald|none)$",
    "log_options": "^(" + _LOG_PAIR + "(," + _LOG_PAIR + ")*)?$",
    "retain": r"^[1-9][0-9]?$",
    "registry_login": r"^(ecr|none)$",
    "release_config": r"^[A-Za-z0-9+/=]{0,4096}$",
    "pointer_parameter": r"^/?[A-Za-z0-9._/-]{1,1000}$",
    "region": r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$",
    "keep_standby": r"^(true|false)$",
}
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")

# --release-config: base64 of {"v": 1, "environment": {NAME: value}, "secrets": [{"var": NAME,
# "from": "ssm" | "secretsmanager", "id": name or ARN, "version": pinned version}]}. Only names,
# ids and versions travel; the host fetches each secret's pinned version with its instance role.
RELEASE_CONFIG_VERSION = 1
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_PARTITION = "aws(-cn|-us-gov)?"
_ARN_REGION = "([a-z]{2}(-[a-z]+)+-[0-9]{1,2})"
_SSM_NAME = "/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"
_SECRET_NAME = "[A-Za-z0-9/_+=.@-]{1,512}"  # noqa: S105 - a pattern, not a password
SECRET_SOURCES: dict[str, dict[str, Any]] = {
    # Parameter names (or ARNs) and the parameter Version (digits; selected as NAME:VERSION).
    "ssm": {"id": re.compile("^(" + _SSM_NAME + "|arn:" + _PARTITION + ":ssm:" + _ARN_REGION
                             + ":[0-9]{12}:parameter/" + _SSM_NAME + ")$"),
            "id_max": 2048, "version": re.compile(r"^[1-9][0-9]{0,18}$")},
    # Secret names (or ARNs) and the VersionId (32 to 64 characters, a UUID when AWS makes it).
    "secretsmanager": {"id": re.compile("^(" + _SECRET_NAME + "|arn:" + _PARTITION + ":secretsmanager:"
                                        + _ARN_REGION + ":[0-9]{12}:secret:" + _SECRET_NAME + ")$"),
                       "id_max": 2048, "version": re.compile(r"^[A-Za-z0-9-]{32,64}$")},
}
# docker's env file is line-based UTF-8: a value may hold neither a line break nor NUL.
ENV_VALUE_FORBIDDEN = re.compile("[\n\r\x00]")
ENV_DIR = "env.d"  # under the state dir; no app is named with a dot, so it never meets one
RETAINED_CONFIGS = 10  # configs remembered per retained image: a rollback to one is gated briefly


class ConfigInvalid(ValueError):
    """--release-config failed a check; the message names the field, never a value."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a JSON object repeats a key")
    return dict(pairs)


def _env_value_ok(value: str) -> bool:
    if ENV_VALUE_FORBIDDEN.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_release_config(text: str) -> dict[str, Any]:
    """The release's pinned config from --release-config, checked field by field.

    Raises ValueError naming the field; the message never repeats a value from the input (a
    variable's name only once it is known to be a valid name)."""
    empty: dict[str, Any] = {"environment": [], "secrets": []}
    if text == "":
        return empty
    if len(text) > 4096 or not re.fullmatch(PATTERNS["release_config"], text):
        raise ConfigInvalid("--release-config is not base64 of at most 4096 characters")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise ConfigInvalid("--release-config is not base64 of one JSON object "
                            "without repeated keys") from None
    if not isinstance(data, dict):
        raise ConfigInvalid("--release-config is not a JSON object")
    unknown = sorted(set(data) - {"v", "environment", "secrets"})
    if unknown:
        named = [k for k in unknown if re.match(r"^[a-z_]{1,40}$", k)]
        raise ConfigInvalid("--release-config has unknown keys" + (": " + ", ".join(named) if named else ""))
    if type(data.get("v")) is not int or data["v"] != RELEASE_CONFIG_VERSION:
        raise ConfigInvalid(f"--release-config v must be {RELEASE_CONFIG_VERSION}")
    environment = data.get("environment", {})
    if not isinstance(environment, dict):
        raise ConfigInvalid("--release-config environment must be an object")
    names: set[str] = set()
    env: list[tuple[str, str]] = []
    for index, (name, value) in enumerate(environment.items()):
        if not ENV_NAME.fullmatch(name):
            raise ConfigInvalid(f"--release-config environment: name #{index + 1} "
                                       f"does not match {ENV_NAME.pattern}")
        if not isinstance(value, str) or not _env_value_ok(value):
            raise ConfigInvalid(f"--release-config environment.{name} must be a string "
                                       "without line break or NUL")
        names.add(name)
        env.append((name, value))
    secrets = data.get("secrets", [])
    if not isinstance(secrets, list):
        raise ConfigInvalid("--release-config secrets must be a list")
    pinned: list[dict[str, str]] = []
    for index, entry in enumerate(secrets):
        field = f"--release-config secrets[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"var", "from", "id", "version"}:
            raise ConfigInvalid(field + " must be an object of exactly var, from, id and version")
        if not all(isinstance(v, str) for v in entry.values()):
            raise ConfigInvalid(field + " var, from, id and version must be strings")
        var, source, ident, version = entry["var"], entry["from"], entry["id"], entry["version"]
        if not ENV_NAME.fullmatch(var):
            raise ConfigInvalid(field + ".var does not match " + ENV_NAME.pattern)
        if var in names:
            raise ConfigInvalid(field + ".var " + var + " is already set by environment or another secret")
        if source not in SECRET_SOURCES:
            raise ConfigInvalid(field + ".from must be one of " + ", ".join(SECRET_SOURCES))
        rules = SECRET_SOURCES[source]
        if len(ident) > rules["id_max"] or not rules["id"].fullmatch(ident):
            raise ConfigInvalid(field + ".id is not a valid " + source + " name or ARN")
        if not rules["version"].fullmatch(version):
            raise ConfigInvalid(field + ".version does not match " + rules["version"].pattern)
        names.add(var)
        pinned.append({"var": var, "from": source, "id": ident, "version": version})
    return {"environment": env, "secrets": pinned}


def config_id(config: dict[str, Any]) -> str:
    """The identity of a decoded release config (a container label, the state): a hash of its
    names, plain values, secret ids and versions (never a secret's value); "" for no config."""
    if not config["environment"] and not config["secrets"]:
        return ""
    canonical = json.dumps([config["environment"], config["secrets"]], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


HOST_DEFAULTS: dict[str, Any] = {
    "host_id": "deployer",
    "state_dir": "/var/lib/deployer",
    "nginx_command": ["nginx"],
    "nginx_prefix": None,
    "nginx_conf": None,
    "nginx_error_log": None,
    "nginx_conf_dir": "/etc/nginx/conf.d",
    "listen_address": "0.0.0.0",  # noqa: S104 - the load balancer reaches nginx on the host's address
    "listen_port": 80,
    "stable_port": 18080,
    "blue_port": 18081,
    "green_port": 18082,
    "network_mode": "publish",
    "nft_table": "deployer",
    "docker_command": ["docker"],
    "nft_command": ["nft"],
    "aws_command": ["aws"],
    "conntrack_command": [],
    "lock_timeout": 600,
    "drain_seconds": 30.0,
    "stop_timeout": 30,
    "pull_attempts": 5,
    "pull_backoff": 1.0,
    "pull_backoff_max": 20.0,
    "pull_timeout": 600,
    "health_successes": 3,
    "health_interval": 0.5,
    "pointer_timeout": 5,
    "config_timeout": 60,
    "region": None,
    "upstream_read_timeout": 60,
    "upstream_keepalive": 0,
    "systemd_unit_dir": "/etc/systemd/system",
    "systemctl_command": ["systemctl"],
    "proxy_unit": "nginx.service",
    "nginx_pid_file": "/run/nginx.pid",
    # The proxy's JSON access log, one file per app (<dir>/<app>.access.json), read by `meter`.
    "access_log_dir": "/var/log/deployer",
    "meter_interval": 10,  # seconds between two PutMetricData calls of `meter`
}
COLOURS = ("blue", "green")
SWITCHES_FILE = "switches.jsonl"  # under <state_dir>/<app>/: one line per traffic switch
SWITCHES_KEPT = 100  # lines kept when the file is compacted (at twice as many)
# Containers of one app on one host: the live colour and, during a canary, the standby colour.
MAX_APP_CONTAINERS = 2
LOG_TAIL_LINES = 15
SUMMARY_MAX_CHARS = 2400

# Rendered with str.replace (SSM would interpolate double braces in an inlined copy).
SITE_TEMPLATE = """# Managed by the deployer host agent; rewritten on boot.
# One JSON line per request for `agent.py meter`: when it ended (epoch seconds, ms precision),
# the status nginx answered and the request's time in seconds. Named per app: the site files of
# several apps share the http block.
log_format deployer_json_@APP@ escape=json '{"t":$msec,"s":$status,"rt":$request_time}';

upstream deployer_@APP@ {
    # Nothing listens on the stable port: an nftables DNAT rule sends it to the live colour.
    # Listed five times so a connection refused, reset or not accepted in time around a switch
    # is retried on new connections (one try per entry).
    server 127.0.0.1:@STABLE@ max_fails=0;
    server 127.0.0.1:@STABLE@ max_fails=0;
    server 127.0.0.1:@STABLE@ max_fails=0;
    server 127.0.0.1:@STABLE@ max_fails=0;
    server 127.0.0.1:@STABLE@ max_fails=0;
@KEEPALIVE@}

server {
    listen @LISTEN@ default_server;
    keepalive_requests 10000;
    access_log @ACCESS_LOG@ deployer_json_@APP@;

    location / {
        proxy_pass http://deployer_@APP@;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        # A loopback connect completes in microseconds unless the app's accept queue is full,
        # when the kernel drops the SYN and resends it only after 1 s. Giving up after 250 ms and
        # retrying on a new connection (safe for any method: nothing was sent) bounds that wait;
        # five tries tolerate 1.25 s of an app not accepting.
        proxy_connect_timeout 250ms;
        proxy_read_timeout @READ_TIMEOUT@s;
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 5;
    }
}
"""


# systemd drop-in for the proxy's unit, installed by every run: nginx comes back by itself when
# it dies, with no agent run. A master killed alone leaves a worker that still holds the listen
# socket, so the whole unit is stopped (SIGQUIT: the worker finishes its requests) before a new
# master starts; no start limit, so a proxy that keeps dying keeps being restarted.
PROXY_DROP_IN = """# Managed by the deployer host agent: restart the proxy whenever it dies.
[Unit]
StartLimitIntervalSec=0

[Service]
Restart=always
RestartSec=200ms
KillMode=control-group
KillSignal=SIGQUIT
TimeoutStopSec=5
"""
PROXY_DROP_IN_NAME = "deployer-restart.conf"


class Failure(Exception):
    """A classified failure: the summary reports it and the agent exits with its code."""

    def __init__(self, failure_class: str, message: str, *, container_exit: int | None = None,
                 log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message
        self.container_exit = container_exit
        self.log_tail = log_tail or []


class UsageError(Exception):
    """Bad command line."""


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    sys.stderr.write("agent " + stamp + " " + message + "\n")
    sys.stderr.flush()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- host settings ----------------------------------------------------------------------------


def load_host_config() -> dict[str, Any]:
    path = os.environ.get("DEPLOYER_HOST_CONFIG", "/etc/deployer/host.json")
    config = dict(HOST_DEFAULTS)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return config
    except (OSError, ValueError) as exc:
        raise Failure("input", "host config " + path + " is unreadable: " + str(exc)) from exc
    if not isinstance(data, dict):
        raise Failure("input", "host config " + path + " must be a JSON object")
    unknown = sorted(set(data) - set(HOST_DEFAULTS))
    if unknown:
        raise Failure("input", "host config " + path + " has unknown keys: " + ", ".join(unknown))
    config.update(data)
    for key in ("nginx_command", "docker_command", "nft_command", "aws_command", "conntrack_command",
                "systemctl_command"):
        value = config[key]
        if not (isinstance(value, list) and (value or key == "conntrack_command")
                and all(isinstance(v, str) for v in value)):
            raise Failure("input", "host config " + key + " must be a non-empty list of strings")
    for key in ("listen_port", "stable_port", "blue_port", "green_port"):
        if not (isinstance(config[key], int) and 0 < config[key] < 65536):
            raise Failure("input", "host config " + key + " must be a TCP port number")
    if config["network_mode"] not in ("host", "publish"):
        raise Failure("input", "host config network_mode must be 'host' or 'publish'")
    if config["proxy_unit"] and not re.match(r"^[A-Za-z0-9@._-]{1,100}\.service$", str(config["proxy_unit"])):
        raise Failure("input", "host config proxy_unit must be a systemd service name or null")
    if not re.match(r"^[a-z][a-z0-9-]{0,30}$", str(config["host_id"])):
        raise Failure("input", "host config host_id must match [a-z][a-z0-9-]{0,30}")
    if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,63}$", str(config["nft_table"])):
        raise Failure("input", "host config nft_table must be a plain identifier")
    if config["region"] is not None and not re.fullmatch(PATTERNS["region"], str(config["region"])):
        raise Failure("input", "host config region must be an AWS region name or null")
    # Written into the nginx site unquoted: a plain absolute path only.
    if not re.fullmatch(r"/[A-Za-z0-9._/-]{1,200}", str(config["access_log_dir"])):
        raise Failure("input", "host config access_log_dir must be an absolute path of letters, "
                      "digits, . _ / -")
    interval = config["meter_interval"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= 60:
        raise Failure("input", "host config meter_interval must be a number of seconds in (0, 60]")
    return config


def access_log_path(config: dict[str, Any], app: str) -> Path:
    return Path(config["access_log_dir"]) / (app + ".access.json")


# --- command line -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="agent.py", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    sub = parser.add_subparsers(dest="mode")
    for mode in ("swap", "boot"):
        cmd = sub.add_parser(mode, add_help=False)
        cmd.add_argument("--app", required=True)
        cmd.add_argument("--image", required=True)
        cmd.add_argument("--release", required=True)
        cmd.add_argument("--port", required=True)
        cmd.add_argument("--health-path", default="/health")
        cmd.add_argument("--health-timeout", default="60")
        cmd.add_argument("--env-file", default="")
        cmd.add_argument("--docker-options", default="")
        cmd.add_argument("--log-driver", default="json-file")
        cmd.add_argument("--log-options", default="")
        cmd.add_argument("--retain", default="3")
        cmd.add_argument("--registry-login", default="none")
        cmd.add_argument("--release-config", default="")
        cmd.add_argument("--keep-standby", default="false")
        if mode == "boot":
            cmd.add_argument("--pointer-parameter", default="")
            cmd.add_argument("--region", default="")
    task = sub.add_parser("task", add_help=False)
    for flag in ("--app", "--image", "--release", "--argv", "--timeout"):
        task.add_argument(flag, required=True)
    for flag, default in (("--env-file", ""), ("--docker-options", ""), ("--log-driver", "json-file"),
                          ("--log-options", ""), ("--registry-login", "none"), ("--release-config", "")):
        task.add_argument(flag, default=default)
    status = sub.add_parser("status", add_help=False)
    status.add_argument("--app", default="")
    meter = sub.add_parser("meter", add_help=False)
    meter.add_argument("--app", required=True)
    meter.add_argument("--region", default="")
    diagnose_cmd = sub.add_parser("diagnose", add_help=False)
    diagnose_cmd.add_argument("--app", required=True)
    diagnose_cmd.add_argument("--health-path", default="/health")
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise UsageError("help")
    args = parser.parse_args(argv)
    if args.mode is None:
        raise UsageError("a mode is required: swap, boot, task, status, diagnose or meter")
    return args


def validate(args: argparse.Namespace) -> list[str]:
    """Every flag against its pattern; returns the problems, naming each flag."""
    problems = []
    names = ["app", "image", "release", "port", "health_path", "health_timeout", "env_file",
             "docker_options", "log_driver", "log_options", "retain", "registry_login", "release_config",
             "keep_standby"]
    if args.mode == "boot":
        if args.pointer_parameter:
            names.append("pointer_parameter")
        if args.pointer_parameter or args.region:
            names.append("region")
    for name in names:
        value = getattr(args, name)
        if name == "release_config":
            continue  # checked below, field by field, never echoed
        if not re.match(PATTERNS[name], value) or "\n" in value:
            problems.append("--" + name.replace("_", "-") + " " + json.dumps(value)[:80]
                            + " does not match " + PATTERNS[name][:120])
    try:
        decode_release_config(args.release_config)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        return problems
    if int(args.port) > 65535:
        problems.append("--port must be at most 65535")
    if args.env_file and not os.path.isfile(args.env_file):
        problems.append("--env-file " + args.env_file + " is not a file on this host")
    if args.registry_login == "ecr" and not ECR_HOST.match(args.image.split("/", 1)[0]):
        problems.append("--registry-login ecr needs an ECR image reference, got " + args.image[:80])
    return problems


# --- processes --------------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command without a shell; never raises for a non-zero exit."""
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(cmd, 124, "", out + f"\ntimed out after {timeout}s")
    except OSError as exc:
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class Host:
    """The side effects on this host: docker, nginx, nftables, files."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.c = config
        self.docker_cmd = list(config["docker_command"])
        self.nft_cmd = list(config["nft_command"])

    # docker

    def docker(self, *args: str, timeout: float = 120,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.docker_cmd + list(args), timeout=timeout, stdin=stdin)

    def inspect(self, name: str) -> dict[str, Any] | None:
        proc = self.docker("container", "inspect", name, timeout=30)
        if proc.returncode != 0:
            return None
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            return None
        return data[0] if data else None

    def inspect_both(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The containers among ``names`` that exist, by name, in one `docker inspect` (it exits
        1 when one is missing, yet prints the others)."""
        proc = self.docker("container", "inspect", *names, timeout=30)
        try:
            data = json.loads(proc.stdout or "[]")
        except ValueError:
            return {}
        found = {str(c.get("Name", "")).lstrip("/"): c for c in data if isinstance(c, dict)}
        return {name: found[name] for name in names if name in found}

    def image_present(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, timeout=30).returncode == 0

    def log_tail(self, name: str) -> list[str]:
        proc = self.docker("logs", "--tail", str(LOG_TAIL_LINES), name, timeout=30)
        lines = (proc.stdout + proc.stderr).splitlines()
        return [line[:200] for line in lines if line.strip()][-LOG_TAIL_LINES:]

    def remove_container(self, name: str) -> bool:
        proc = self.docker("rm", "-f", name, timeout=60)
        removed = proc.returncode == 0 or self.inspect(name) is None
        if removed:
            self.remove_env_file(name)
        return removed

    # the release's env file (config and secret values): 0600 in a 0700 directory, one per
    # container, written before `docker run` and removed with the container

    def env_dir(self) -> Path:
        return Path(self.c["state_dir"]) / ENV_DIR

    def env_path(self, name: str) -> Path:
        return self.env_dir() / (name + ".env")

    def write_env_file(self, name: str, entries: list[tuple[str, str]]) -> Path:
        """Write ``entries`` atomically: a temp file created 0600, then renamed over the file."""
        directory = self.env_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.is_symlink() or not directory.is_dir():
            raise OSError(f"{directory} is not a directory")
        os.chmod(str(directory), 0o700)
        path = self.env_path(name)
        tmp = directory / ("." + name + ".env.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("".join(k + "=" + v + "\n" for k, v in entries))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(str(tmp), str(path))
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return path

    def remove_env_file(self, name: str) -> None:
        try:
            self.env_path(name).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log(f"removing the env file of {name} failed: {exc}")
            return
        log("removed the env file of " + name)

    # nginx

    def nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(self.c["nginx_command"])
        for flag, key in (("-p", "nginx_prefix"), ("-c", "nginx_conf"), ("-e", "nginx_error_log")):
            if self.c[key]:
                cmd += [flag, str(self.c[key])]
        return run(cmd + list(args), timeout=60)

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", int(self.c["listen_port"])), timeout=1):
                return True
        except OSError:
            return False

    # nftables

    def nft(self, script: str) -> subprocess.CompletedProcess[str]:
        return run([*self.nft_cmd, "-f", "-"], stdin=script, timeout=30)

    def dnat_target(self) -> int | None:
        """The colour port the stable port is sent to now, or None."""
        proc = run([*self.nft_cmd, "list", "chain", "ip", self.c["nft_table"], "output"], timeout=30)
        if proc.returncode != 0:
            return None
        match = re.search(r"dnat (?:ip )?to 127\.0\.0\.1:([0-9]+)", proc.stdout)
        return int(match.group(1)) if match else None

    @staticmethod
    def connections(port: int) -> int | None:
        """TCP connections being set up or open on local ``port`` (None: unknown, so drain fully)."""
        count = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
            except OSError:
                continue
            # local address "ADDR:PORT" (hex), state 01 ESTABLISHED or 03 SYN_RECV
            count = (count or 0) + sum(1 for r in rows if len(f := r.split()) > 3
                                       and int(f[1].rsplit(":", 1)[1], 16) == port and f[3] in ("01", "03"))
        return count

    def forget_flows(self, old_port: int) -> None:
        """Delete conntrack entries that still map the stable port to ``old_port`` (now closed).

        A new connection whose source port matches a tracked flow in CLOSE state (a reset or
        refused connection, kept 10 s) is not re-translated: it reuses the old DNAT mapping.
        Only called once nothing listens on ``old_port``: a live connection can sit on an entry
        conntrack still marks CLOSE, and deleting it would strand that connection's replies.
        """
        cmd = [*self.c["conntrack_command"], "-D", "-p", "tcp", "--orig-dst", "127.0.0.1",
               "--orig-port-dst", str(self.c["stable_port"]), "--reply-port-src", str(old_port)]
        proc = run(cmd, timeout=30)
        if proc.returncode == 127:
            log(f"conntrack tool missing; stale flows to port {old_port} expire on their own")
        elif proc.returncode not in (0, 1):  # 1: nothing matched
            log("conntrack flush failed: " + last_line(proc.stderr))

    def set_dnat(self, port: int, comment: str) -> subprocess.CompletedProcess[str]:
        """Point the stable port at ``port`` in one atomic nft transaction.

        The same transaction resets any connection attempt that reaches another port through the
        stable port: such a SYN rides a stale conntrack flow (one in CLOSE state is not
        re-translated) and would land on the old colour, or on a colour not live yet. nginx
        retries it on a fresh connection, which goes to ``port``. Flows already established with
        the old colour finish normally, and no conntrack entry is ever deleted: deleting the
        entry of a live connection strands its replies.
        """
        table = self.c["nft_table"]
        stable = str(self.c["stable_port"])
        script = (
            "add table ip " + table + "\n"
            "add chain ip " + table + " output { type nat hook output priority -100 ; policy accept ; }\n"
            "add chain ip " + table + " guard { type filter hook output priority 0 ; policy accept ; }\n"
            "flush chain ip " + table + " output\n"
            "flush chain ip " + table + " guard\n"
            "add rule ip " + table + " output ip daddr 127.0.0.1 tcp dport " + stable
            + " counter dnat to 127.0.0.1:" + str(port) + ' comment "' + comment + '"\n'
            "add rule ip " + table + " guard ip daddr 127.0.0.1 tcp dport != " + str(port)
            + " ct original proto-dst " + stable
            + " tcp flags & (syn | ack) == syn counter reject with tcp reset\n"
        )
        return self.nft(script)


def instance_id(config: dict[str, Any]) -> str:
    """This host's EC2 instance id (SSM sets AWS_SSM_INSTANCE_ID for Run Command; cloud-init
    writes it at boot), else the host id: the name `deployer logs --host` filters on."""
    found = os.environ.get("AWS_SSM_INSTANCE_ID", "")
    if not found:
        try:
            found = Path("/var/lib/cloud/data/instance-id").read_text(encoding="ascii").strip()
        except OSError:
            found = ""
    return found if re.match(r"^[A-Za-z0-9-]{1,64}$", found) else str(config["host_id"])


def awslogs_defaults(config: dict[str, Any], app: str, container: str, options: list[str]) -> list[str]:
    """awslogs options completed with the deployer's naming (docs/runbook.md, "Where the logs
    are"): group /deployer/<app>, stream <instance id>/<container>, so `deployer logs APP --host I`
    reads one host's container logs by stream prefix."""
    given = {o.split("=", 1)[0] for o in options}
    extra = []
    if "awslogs-group" not in given:
        extra.append("awslogs-group=/deployer/" + app)
    if "awslogs-stream" not in given and "tag" not in given:
        extra.append("awslogs-stream=" + instance_id(config) + "/" + container)
    region = os.environ.get("AWS_SSM_REGION_NAME", "")
    if "awslogs-region" not in given and re.match(PATTERNS["region"], region):
        extra.append("awslogs-region=" + region)
    return options + extra


# --- HTTP -------------------------------------------------------------------------------------


def http_status(port: int, path: str, timeout: float = 2.0) -> int:
    """Status of one GET to 127.0.0.1:port, or 0 when no HTTP answer came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "deployer-agent", "Connection": "close"})
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()
    return resp.status


# --- state ------------------------------------------------------------------------------------


class State:
    def __init__(self, config: dict[str, Any], app: str) -> None:
        self.dir = Path(config["state_dir"]) / app
        self.path = self.dir / "state.json"

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("state.json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(str(tmp), str(self.path))


class Lock:
    """Per-app flock; waits up to the host's lock_timeout."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd: int | None = None

    def acquire(self) -> float:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        started = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            waited = time.monotonic() - started
            if waited >= self.timeout:
                os.close(fd)
                raise Failure("lock", f"another agent run held {self.path} for {waited:.0f}s")
            if not announced:
                log("waiting for the host lock " + str(self.path))
                announced = True
            time.sleep(0.1)
        self.fd = fd
        return time.monotonic() - started

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# --- the agent --------------------------------------------------------------------------------


class Agent:
    def __init__(self, config: dict[str, Any], args: argparse.Namespace) -> None:
        self.c = config
        self.args = args
        self.host = Host(config)
        self.app = args.app
        self.release = int(args.release)
        self.image = args.image
        self.digest = args.image.rsplit("@", 1)[1]
        self.state = State(config, self.app)
        phases = ("lock", "config", "pull", "start", "health", "switch", "drain", "cleanup", "total")
        self.timings: dict[str, float] = dict.fromkeys(phases, 0.0)
        self.pull_attempts = 0
        self.previous_release: int | None = None
        self.messages: list[str] = []
        self.warning: str | None = None  # one of WARNING_CLASSES once the release is live
        self.warning_message = ""
        self.phase = "lock"  # the failure class an unexpected error is reported under
        self.pointer_read = False
        self.keep_standby = getattr(args, "keep_standby", "false") == "true"
        self.set_release_config(getattr(args, "release_config", ""))
        # The fetched environment (plain values and secret values): only ever written to the
        # container's env file, never logged, printed or saved in the state.
        self.env_entries: list[tuple[str, str]] = []

    def set_release_config(self, text: str) -> None:
        """Adopt a release config (raises ValueError naming the field when it is invalid)."""
        self.config = decode_release_config(text)
        self.release_config = text
        self.config_id = config_id(self.config)

    def colour_port(self, colour: str) -> int:
        return int(self.c[colour + "_port"])

    @staticmethod
    def other_colour(colour: str) -> str:
        return "green" if colour == "blue" else "blue"

    def container_name(self, colour: str) -> str:
        return self.c["host_id"] + "-" + self.app + "-" + colour

    def timed(self, phase: str, started: float) -> None:
        self.timings[phase] = round(self.timings[phase] + time.monotonic() - started, 3)

    # boot only

    def read_pointer(self) -> None:
        """Use the release pointer when it can be read quickly; otherwise keep the baked release."""
        name, region = self.args.pointer_parameter, self.args.region
        if not name:
            return
        cmd = [*self.c["aws_command"], "ssm", "get-parameter", "--name", name, "--output", "json"]
        if region:
            cmd += ["--region", region]
        proc = run(cmd, timeout=float(self.c["pointer_timeout"]))
        try:
            if proc.returncode != 0:
                raise ValueError(last_line(proc.stderr) or f"exit {proc.returncode}")  # noqa: TRY301
            pointer = json.loads(json.loads(proc.stdout)["Parameter"]["Value"])
            release = str(pointer["release"])
            image = str(pointer.get("image") or "")
            # The pointer carries the release's config; an older pointer without the key for the
            # baked release keeps the baked config.
            if "release_config" in pointer or int(release) != self.release:
                release_config = pointer.get("release_config") or ""
            else:
                release_config = self.args.release_config
            digest = str(pointer.get("digest") or "")
            if "@" not in image and digest:
                repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
                image = repo + "@" + digest
        except (ValueError, KeyError, TypeError) as exc:
            log(f"boot: release pointer unreadable ({exc}); using the baked release {self.release}")
            self.messages.append("pointer unreadable, baked release used")
            return
        valid = (re.match(PATTERNS["release"], release) and re.match(PATTERNS["image"], image)
                 and isinstance(release_config, str))
        if valid:
            try:
                decode_release_config(release_config)
            except ValueError as exc:
                log(f"boot: release pointer's config is invalid ({exc})")
                valid = False
        if not valid:
            log("boot: release pointer holds an invalid release, image or config; using the baked release")
            self.messages.append("pointer invalid, baked release used")
            return
        if int(release) != self.release:
            log(f"boot: release pointer says release {release} (baked {self.release})")
        self.release, self.image, self.digest = int(release), image, image.rsplit("@", 1)[1]
        self.set_release_config(release_config)
        self.pointer_read = True

    # nginx site

    def ensure_site(self) -> None:
        """Install the nginx site when absent or stale: nginx -t first, never reload a failing config."""
        started = time.monotonic()
        try:
            site_dir = Path(self.c["nginx_conf_dir"])
            path = site_dir / ("deployer-" + self.app + ".conf")
            listen = str(self.c["listen_address"]) + ":" + str(self.c["listen_port"])
            wanted = (SITE_TEMPLATE.replace("@APP@", self.app)
                      .replace("@STABLE@", str(self.c["stable_port"])).replace("@LISTEN@", listen)
                      .replace("@READ_TIMEOUT@", str(int(self.c["upstream_read_timeout"])))
                      .replace("@ACCESS_LOG@", str(access_log_path(self.c, self.app))))
            # Default: one upstream connection per request, so each request is DNATed to the
            # colour live when it starts, the app never closes a connection nginx may reuse, and
            # the drain's "no connection left" means "nothing in flight". Pooled connections keep
            # carrying requests to the old colour after the switch until its graceful stop resets
            # those with a request the app had not read yet (a POST there is a 502: nginx does
            # not resend it). The request still says keep-alive, so nginx closes first and the
            # TIME_WAIT stays on its side: a port it reuses never meets the app's TIME_WAIT socket,
            # which answers a new SYN with a bare ACK (1 s until the SYN is resent).
            keepalive = int(self.c["upstream_keepalive"])
            wanted = wanted.replace("@KEEPALIVE@", (
                f"    keepalive {keepalive};\n    keepalive_time 1s;\n    keepalive_timeout 1s;\n"
                if keepalive > 0 else ""))
            try:
                current: str | None = path.read_text(encoding="utf-8")
            except OSError:
                current = None
            if current == wanted:
                if not self.host.listening():
                    self.start_nginx()
                return
            site_dir.mkdir(parents=True, exist_ok=True)
            access_log_path(self.c, self.app).parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted, encoding="utf-8")
            check = self.host.nginx("-t")
            if check.returncode != 0:
                if current is None:
                    path.unlink()
                else:
                    path.write_text(current, encoding="utf-8")
                lines = [line[:200] for line in check.stderr.splitlines() if line.strip()]
                raise Failure("switch", "nginx -t rejected the site config; nginx was not reloaded",
                              log_tail=lines[-LOG_TAIL_LINES:])
            log("nginx site " + str(path) + (" installed" if current is None else " updated"))
            reload = self.host.nginx("-s", "reload")
            if reload.returncode != 0:
                self.start_nginx()
            self.wait_listening()
        finally:
            self.timed("switch", started)

    def start_nginx(self) -> None:
        check = self.host.nginx("-t")
        if check.returncode != 0:
            raise Failure("switch", "nginx -t failed; nginx was not started",
                          log_tail=[line[:200] for line in check.stderr.splitlines() if line.strip()])
        unit = self.c["proxy_unit"]
        if self.c["systemd_unit_dir"] and unit:
            # Under systemd: start the unit, so the nginx that runs is the supervised one.
            log("starting " + unit)
            for step in (["reset-failed", unit], ["start", unit]):
                proc = run([*self.c["systemctl_command"], *step], timeout=60)
            if proc.returncode != 0:
                raise Failure("switch", "systemctl start " + unit + " failed: " + last_line(proc.stderr))
            self.wait_listening()
            return
        log("starting nginx")
        proc = self.host.nginx()
        if proc.returncode != 0:
            raise Failure("switch", "nginx would not start: " + last_line(proc.stderr))
        self.wait_listening()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.host.listening():
                return
            time.sleep(0.05)
        raise Failure("switch", "nginx does not listen on port {}".format(self.c["listen_port"]))

    # live release

    def live_colour(self, state: dict[str, Any]) -> str | None:
        target = self.host.dnat_target()
        for colour in COLOURS:
            if target == self.colour_port(colour):
                return colour
        colour = state.get("colour")
        return colour if colour in COLOURS else None

    def serving(self, colour: str | None, info: dict[str, Any] | None = None) -> bool:
        """Whether ``colour``'s container (``info``: its inspection, when already read) runs this
        run's image and answers healthy.

        Judged by the container's digest label, not by the state file: a run killed between the
        rule's commit and the state's save leaves the new release serving with the old state.
        """
        if colour is None:
            return False
        info = info or self.host.inspect(self.container_name(colour))
        if not info or not info.get("State", {}).get("Running"):
            return False
        labels = info.get("Config", {}).get("Labels") or {}
        if labels.get("deployer.digest") != self.digest:
            return False
        if labels.get("deployer.config", "") != self.config_id:
            return False  # same image, other config: a config-only release swaps like any other
        return 200 <= http_status(self.colour_port(colour), self.args.health_path) < 300

    # config

    def fetch_config(self) -> None:
        """The release's environment: its plain variables and each secret's pinned version,
        fetched with the instance role. Only names and versions are logged."""
        started = time.monotonic()
        try:
            entries = list(self.config["environment"])
            for secret in self.config["secrets"]:
                entries.append((secret["var"], self.fetch_secret(secret)))
            if self.config["secrets"]:
                pinned = [s["var"] + " (" + s["from"] + " version " + s["version"] + ")"
                          for s in self.config["secrets"]]
                log("fetched the pinned secrets: " + ", ".join(pinned))
            self.env_entries = entries
        finally:
            self.timed("config", started)

    def secret_region(self, ident: str) -> str:
        """An ARN's own region; else boot's --region, the host config's region, or the region
        SSM Run Command names (AWS_SSM_REGION_NAME); "" leaves it to the AWS CLI's own chain."""
        arn = re.match(r"^arn:[a-z-]+:[a-z]+:([a-z0-9-]+):", ident)
        if arn:
            return arn.group(1)
        for candidate in (getattr(self.args, "region", ""), self.c["region"] or "",
                          os.environ.get("AWS_SSM_REGION_NAME", "")):
            if candidate and re.fullmatch(PATTERNS["region"], candidate):
                return str(candidate)
        return ""

    def fetch_secret(self, secret: dict[str, str]) -> str:
        """One pinned secret's value (class config when it cannot be fetched or used)."""
        var, source, ident, version = secret["var"], secret["from"], secret["id"], secret["version"]
        where = f"{var} ({source} {ident} version {version})"
        aws = list(self.c["aws_command"])
        # --flag=value: an id starting with "-" stays a value
        if source == "ssm":
            cmd = [*aws, "ssm", "get-parameter", "--name=" + ident + ":" + version, "--with-decryption"]
        else:
            cmd = [*aws, "secretsmanager", "get-secret-value", "--secret-id=" + ident,
                   "--version-id=" + version]
        cmd += ["--output", "json"]
        region = self.secret_region(ident)
        if region:
            cmd += ["--region", region]
        proc = run(cmd, timeout=float(self.c["config_timeout"]))
        if proc.returncode != 0:
            # The CLI has retried throttling and transient errors already; its error names the
            # parameter or secret, never a value.
            raise Failure("config", f"secret {where} could not be fetched: "
                          + (last_line(proc.stderr) or f"exit {proc.returncode}"))
        try:
            answer = json.loads(proc.stdout)
            if source == "ssm":
                value, got = answer["Parameter"]["Value"], str(answer["Parameter"]["Version"])
            elif "SecretString" in answer:
                value, got = answer["SecretString"], str(answer["VersionId"])
            else:
                raise Failure("config", f"secret {where} is binary; an environment variable holds text")
        except (ValueError, KeyError, TypeError):
            raise Failure("config", f"secret {where}: the AWS CLI's answer was not understood") from None
        if not isinstance(value, str) or got != version:
            raise Failure("config", f"secret {where}: AWS answered another version or no text")
        if not _env_value_ok(value):
            raise Failure("config", f"secret {var}: its value holds a line break or NUL, which docker's "
                          "line-based env file cannot carry")
        return value

    # pull

    def pull(self) -> None:
        started = time.monotonic()
        try:
            if self.host.image_present(self.image):
                log("image already on this host (retained release); no pull")
                return
            attempts = int(self.c["pull_attempts"])
            jitter = random.SystemRandom()
            error = ""
            for attempt in range(1, attempts + 1):
                self.pull_attempts = attempt
                error = self.login()
                if not error:
                    proc = self.host.docker("pull", self.image, timeout=float(self.c["pull_timeout"]))
                    if proc.returncode == 0:
                        log(f"pulled {self.image} (attempt {attempt})")
                        return
                    error = last_line(proc.stderr) or f"docker pull exited {proc.returncode}"
                if attempt < attempts:
                    ceiling = min(float(self.c["pull_backoff_max"]),
                                  float(self.c["pull_backoff"]) * 2 ** (attempt - 1))
                    delay = ceiling / 2 + jitter.uniform(0, ceiling / 2)
                    log(f"pull attempt {attempt}/{attempts} failed: {error}; retrying in {delay:.2f}s")
                    time.sleep(delay)
                else:
                    log(f"pull attempt {attempt}/{attempts} failed: {error}")
            raise Failure("pull", f"pull failed after {attempts} attempts: {error[:300]}",
                          log_tail=[error[:200]])
        finally:
            self.timed("pull", started)

    def login(self) -> str:
        """Log in to ECR when asked; returns an error text, empty on success."""
        if self.args.registry_login != "ecr":
            return ""
        registry = self.image.split("/", 1)[0]
        match = ECR_HOST.match(registry)
        region = match.group(1) if match else ""
        token = run([*self.c["aws_command"], "ecr", "get-login-password", "--region", region], timeout=60)
        if token.returncode != 0 or not token.stdout.strip():
            return "ecr get-login-password failed: " + last_line(token.stderr)
        proc = self.host.docker("login", "--username", "AWS", "--password-stdin", registry,
                                timeout=60, stdin=token.stdout.strip())
        if proc.returncode != 0:
            return "docker login failed: " + last_line(proc.stderr)
        return ""

    # start + health

    def run_args(self, colour: str) -> list[str]:
        port = self.colour_port(colour)
        args = ["run", "-d", "--name", self.container_name(colour),
                "--label", "deployer.host=" + self.c["host_id"],
                "--label", "deployer.app=" + self.app,
                "--label", "deployer.release=" + str(self.release),
                "--label", "deployer.digest=" + self.digest,
                "--label", "deployer.colour=" + colour,
                "--restart", "unless-stopped", "--init",
                "--stop-timeout", str(int(self.c["stop_timeout"])),
                *self.release_run_options(self.container_name(colour))]
        if self.config_id:
            args += ["--label", "deployer.config=" + self.config_id]
        if self.c["network_mode"] == "host":
            args += ["--network", "host", "-e", "PORT=" + str(port)]
        else:
            args += ["-p", f"127.0.0.1:{port}:{self.args.port}", "-e", "PORT=" + self.args.port]
        args += [o for o in self.args.docker_options.split(" ") if o]
        return [*args, self.image]

    def release_run_options(self, name: str) -> list[str]:
        """`docker run` options every container of a release gets, the app's and its release
        task's alike: log driver and options, env file, the deployer variables."""
        args = ["--log-driver", self.args.log_driver]
        log_options = [o for o in self.args.log_options.split(",") if o]
        if self.args.log_driver == "json-file" and not log_options:
            log_options = ["max-size=10m", "max-file=5"]
        if self.args.log_driver == "awslogs":
            log_options = awslogs_defaults(self.c, self.app, name, log_options)
        for option in log_options:
            args += ["--log-opt", option]
        if self.args.env_file:
            args += ["--env-file", self.args.env_file]
        if self.config["environment"] or self.config["secrets"]:
            # After the host's env file: the release's own values win.
            args += ["--env-file", str(self.host.env_path(name))]
        args += ["-e", "DEPLOYER_APP=" + self.app, "-e", "DEPLOYER_RELEASE=" + str(self.release)]
        return args

    def start(self, colour: str) -> None:
        started = time.monotonic()
        try:
            name = self.container_name(colour)
            if self.host.inspect(name) is not None:
                log("removing leftover container " + name)
                self.host.remove_container(name)
            if self.env_entries:
                try:
                    self.host.write_env_file(name, self.env_entries)
                except OSError as exc:
                    raise Failure("config", f"writing the env file of {name} failed: "
                                  + str(exc.strerror or exc)) from None
            else:
                self.host.remove_env_file(name)
            proc = self.host.docker(*self.run_args(colour), timeout=120)
            if proc.returncode != 0:
                self.host.remove_container(name)
                raise Failure("start", "docker run failed: " + last_line(proc.stderr),
                              log_tail=[line[:200] for line in proc.stderr.splitlines() if line.strip()][-5:])
            log(f"started {name} (release {self.release}) on port {self.colour_port(colour)}")
        finally:
            self.timed("start", started)

    def container_failure(self, name: str) -> tuple[str, int | None] | None:
        """Why the container is not (stably) running, or None when it runs."""
        info = self.host.inspect(name)
        if info is None:
            return "the container disappeared", None
        state = info.get("State", {})
        exit_code = state.get("ExitCode")
        if state.get("Restarting") or int(info.get("RestartCount") or 0) > 0:
            return f"the container exited with code {exit_code} and is restarting", exit_code
        if not state.get("Running"):
            return f"the container exited with code {exit_code}", exit_code
        return None

    def health_gate(self, colour: str, served_here: bool = False) -> None:
        started = time.monotonic()
        name = self.container_name(colour)
        port = self.colour_port(colour)
        deadline = started + int(self.args.health_timeout)
        # An image that already went live on this host (a rollback) passed the full stability
        # window then; one healthy answer shows this container works, and rollback is the path
        # where every tenth of a second counts.
        needed = 1 if served_here else int(self.c["health_successes"])
        interval = float(self.c["health_interval"])
        successes = 0
        last_status = 0
        next_inspect = started
        try:
            while True:
                status = http_status(port, self.args.health_path)
                last_status = status
                successes = successes + 1 if 200 <= status < 300 else 0
                if successes >= needed:
                    log(f"healthy: {needed} consecutive 2xx from {self.args.health_path}")
                    return
                now = time.monotonic()
                if successes == 0 and now >= next_inspect:
                    next_inspect = now + 0.5
                    failed = self.container_failure(name)
                    if failed is not None:
                        reason, code = failed
                        self.fail_new(name, "start", reason, code)
                if now >= deadline:
                    got = f"status {last_status}" if last_status else "no answer"
                    reason = (f"health check {self.args.health_path} got {got} "
                              f"within {self.args.health_timeout}s")
                    self.fail_new(name, "health", reason, None)
                # Until the first 2xx, look often: readiness is seen at once; successes keep their spacing.
                time.sleep(interval if successes else min(interval, 0.05))
        finally:
            self.timed("health", started)

    def fail_new(self, name: str, failure_class: str, reason: str, code: int | None) -> None:
        """Capture the new container's logs and status, remove it, raise."""
        tail = self.host.log_tail(name)
        if code is None:
            failed = self.container_failure(name)
            code = failed[1] if failed else None
        self.host.remove_container(name)
        log(reason + "; removed " + name)
        raise Failure(failure_class, reason + "; the new container was removed, the old one serves",
                      container_exit=code, log_tail=tail)

    # switch, drain, cleanup

    def switch(self, new: str, old: str | None) -> None:
        started = time.monotonic()
        try:
            comment = f"app {self.app} release {self.release}"
            proc = self.host.set_dnat(self.colour_port(new), comment)
            if proc.returncode == 0:
                self.record_switch(self.release, self.colour_port(new))
            verified = proc.returncode == 0 and self.verify_stable()
            if verified:
                log(f"traffic switched to {new} (port {self.colour_port(new)})")
                return
            reason = last_line(proc.stderr) if proc.returncode else "the stable port did not answer healthy"
            if old is not None:
                back = self.host.set_dnat(self.colour_port(old), "switched back")
                if proc.returncode == 0 and back.returncode == 0 and isinstance(self.previous_release, int):
                    self.record_switch(self.previous_release, self.colour_port(old))
            tail = self.host.log_tail(self.container_name(new))
            self.host.remove_container(self.container_name(new))
            raise Failure("switch", f"switching traffic failed ({reason}); switched back", log_tail=tail)
        finally:
            self.timed("switch", started)

    def record_switch(self, release: int, port: int, *, only_if_changed: bool = False) -> None:
        """Append ``{"at", "release", "port"}`` to the app's switches file: which release the
        stable port sends new requests to from ``at`` on. The meter attributes each request to
        the release live when it started. Best effort: a line that cannot be written costs the
        attribution of requests, never the deploy."""
        path = self.state.dir / SWITCHES_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
            if only_if_changed and lines:
                try:
                    last = json.loads(lines[-1])
                except ValueError:
                    last = {}
                if isinstance(last, dict) and last.get("release") == release and last.get("port") == port:
                    return
            line = json.dumps({"at": round(time.time(), 3), "release": release, "port": port},
                              separators=(",", ":"))
            self.state.dir.mkdir(parents=True, exist_ok=True)
            if len(lines) >= 2 * SWITCHES_KEPT:
                tmp = path.with_name(SWITCHES_FILE + ".tmp")
                tmp.write_text("\n".join([*lines[-SWITCHES_KEPT:], line]) + "\n", encoding="utf-8")
                os.replace(str(tmp), str(path))
            else:
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
        except OSError as exc:
            log(f"switch of release {release} not recorded for the meter: {exc}")

    def verify_stable(self) -> bool:
        for _ in range(3):
            if 200 <= http_status(int(self.c["stable_port"]), self.args.health_path) < 300:
                return True
            time.sleep(0.1)
        return False

    def app_containers(self) -> list[tuple[str, str, str]] | None:
        """(name, state, colour) of every container of this app on this host, or None when the
        engine cannot list them."""
        proc = self.host.docker("ps", "-a", "--filter", "label=deployer.host=" + self.c["host_id"],
                                "--filter", "label=deployer.app=" + self.app, "--format",
                                '{{.Names}}\t{{.State}}\t{{.Label "deployer.colour"}}', timeout=30)
        if proc.returncode != 0:
            return None
        found = []
        for line in proc.stdout.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[0]:
                found.append((fields[0], fields[1], fields[2]))
        return found

    def converge(self, live: str, standby: str | None = None) -> list[str]:
        """Drain, stop and remove every container of this app but the live colour's (and the
        standby colour's, when one is kept).

        Whatever an interrupted run left behind (the previous release still running or only
        stopped, a new container that never went live) goes here, on every run, so a summary
        without a warning means exactly one container of the app remains, the live one, or two
        with a standby.
        """
        problems: list[str] = []
        found = self.app_containers()
        if found is None:
            return ["listing the containers of " + self.app + " failed"]
        kept = {self.container_name(live)} | ({self.container_name(standby)} if standby else set())
        for name, state, colour in found:
            if name in kept:
                continue
            started = time.monotonic()
            if state == "running" and colour in COLOURS:
                # In-flight requests finish; new connections already reach the live colour.
                port = self.colour_port(colour)
                deadline = started + float(self.c["drain_seconds"])
                while time.monotonic() < deadline and self.host.connections(port) != 0:
                    time.sleep(0.05)
            self.timed("drain", started)
            started = time.monotonic()
            if state in ("running", "restarting", "paused"):
                stop = self.host.docker("stop", "-t", str(int(self.c["stop_timeout"])), name,
                                        timeout=float(self.c["stop_timeout"]) + 60)
                if stop.returncode != 0 and self.host.inspect(name) is not None:
                    problems.append("stopping " + name + " failed: " + last_line(stop.stderr))
                    self.timed("cleanup", started)
                    continue
            proc = self.host.docker("rm", name, timeout=60)
            if proc.returncode != 0 and self.host.inspect(name) is not None:
                problems.append("removing " + name + " failed: " + last_line(proc.stderr))
            else:
                log("removed " + name)
                self.host.remove_env_file(name)
            if self.c["conntrack_command"] and colour in COLOURS:  # off by default: the guard covers it
                self.host.forget_flows(self.colour_port(colour))
            self.timed("cleanup", started)
        # An env file whose container is gone (removed by hand, or a run stopped between writing
        # it and `docker run`) goes too.
        present = {name for name, _, _ in found}
        for colour in COLOURS:
            name = self.container_name(colour)
            if name not in kept and name not in present:
                self.host.remove_env_file(name)
        return problems

    def prune(self, retained: list[dict[str, Any]],
              keep_digests: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Keep the images in ``keep_digests``; remove the other retained images of this app."""
        started = time.monotonic()
        problems: list[str] = []
        kept = []
        for entry in retained:
            if entry.get("digest") in keep_digests:
                kept.append(entry)
                continue
            ref = str(entry.get("image"))
            if not self.host.image_present(ref):
                continue
            users = self.host.docker("ps", "-aq", "--filter", "ancestor=" + ref, timeout=30)
            if users.stdout.strip():
                kept.append(entry)
                continue
            proc = self.host.docker("image", "rm", ref, timeout=120)
            if proc.returncode != 0 and self.host.image_present(ref):
                problems.append(f"pruning release {entry.get('release')} failed: {last_line(proc.stderr)}")
                kept.append(entry)
            else:
                log(f"pruned the image of release {entry.get('release')}")
        self.timed("cleanup", started)
        return kept, problems

    # the whole swap

    def execute(self) -> str:
        if self.args.mode == "boot":
            self.read_pointer()
        lock = Lock(self.state.dir / "agent.lock", float(self.c["lock_timeout"]))
        started = time.monotonic()
        self.timings["lock"] = round(lock.acquire(), 3)
        try:
            outcome = self.execute_locked()
            self.supervise_proxy()
            if self.args.mode == "boot":
                self.install_boot_unit()
                self.install_meter_unit()
            else:
                # A host booted by an older agent gets its meter with its next swap; boot owns
                # the unit's flags, so a swap never rewrites one that exists.
                self.install_meter_unit(only_if_absent=True)
            return outcome
        finally:
            lock.release()
            self.timed("total", started)

    def supervise_proxy(self) -> None:
        """Install the proxy unit's restart drop-in (PROXY_DROP_IN); best effort, like the boot
        unit: without systemd only the automatic restart is lost."""
        unit_dir, unit = self.c["systemd_unit_dir"], self.c["proxy_unit"]
        if not unit_dir or not unit:
            return
        path = Path(unit_dir) / (unit + ".d") / PROXY_DROP_IN_NAME
        try:
            if path.exists() and path.read_text(encoding="utf-8") == PROXY_DROP_IN:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(PROXY_DROP_IN, encoding="utf-8")
        except OSError as exc:
            log(f"proxy restart drop-in not installed: {exc}")
            return
        proc = run([*self.c["systemctl_command"], "daemon-reload"], timeout=60)
        if proc.returncode != 0:
            log("systemctl daemon-reload failed: " + last_line(proc.stderr))
            return
        log(f"installed {path}: {unit} restarts by itself")

    def unit_paths(self) -> tuple[str, str] | None:
        """(agent path, Environment= line) for a unit that runs this agent, or None when there
        is no systemd here or a path would need quoting."""
        agent_path = os.path.abspath(__file__)
        config_path = os.environ.get("DEPLOYER_HOST_CONFIG", "")
        safe_path = re.compile(r"^/[A-Za-z0-9._/-]+$")
        if not self.c["systemd_unit_dir"] or not safe_path.match(agent_path):
            return None
        if config_path and not safe_path.match(config_path):
            return None
        return agent_path, ("Environment=DEPLOYER_HOST_CONFIG=" + config_path + "\n" if config_path else "")

    def install_unit(self, name: str, unit: str, steps: list[list[str]], done: str) -> None:
        """Write the unit file when it differs, then run the systemctl ``steps``. Best effort:
        failures are logged, not raised."""
        path = Path(self.c["systemd_unit_dir"]) / name
        try:
            if path.exists() and path.read_text(encoding="utf-8") == unit:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(unit, encoding="utf-8")
        except OSError as exc:
            log(f"{name} not installed: {exc}")
            return
        for step in steps:
            proc = run([*self.c["systemctl_command"], *step], timeout=60)
            if proc.returncode != 0:
                log("systemctl " + " ".join(step) + " failed: " + last_line(proc.stderr))
                return
        log(f"installed {path}: {done}")

    def install_boot_unit(self) -> None:
        """A systemd unit that re-runs this boot command at every boot.

        nftables rules do not survive a reboot and user data runs once; re-running boot restores
        the rule (the pointer, else the live release, wins over the baked one). Best effort: a
        host without systemd only loses the reboot restore, so failures are logged, not raised.
        """
        paths = self.unit_paths()
        if paths is None:
            return
        agent_path, environment = paths
        flags = ["app", "image", "release", "port", "health_path", "health_timeout", "env_file",
                 "docker_options", "log_driver", "log_options", "retain", "registry_login",
                 "release_config", "pointer_parameter", "region"]
        # Every value matched its pattern: no quote, backslash, $ or %, so double quotes suffice.
        args = ['"--' + f.replace("_", "-") + "=" + str(getattr(self.args, f)) + '"' for f in flags]
        unit = (
            "[Unit]\n"
            "Description=deployer: restore " + self.app + " after a reboot\n"
            "Wants=network-online.target docker.service nginx.service\n"
            "After=network-online.target docker.service nginx.service\n\n"
            "[Service]\n"
            "Type=oneshot\n" + environment +
            "ExecStart=/usr/bin/env python3 " + agent_path + " boot " + " ".join(args) + "\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )
        self.install_unit("deployer-" + self.app + "-boot.service", unit,
                          [["daemon-reload"], ["enable", "deployer-" + self.app + "-boot.service"]],
                          "boot re-runs after a reboot")

    def install_meter_unit(self, only_if_absent: bool = False) -> None:
        """`deployer-meter-<app>.service`: the app's proxy metrics (`agent.py meter`), always
        running (restarted when it dies; it restarts itself when the agent file changes).
        Best effort like the boot unit: without it the host only sends no metrics."""
        paths = self.unit_paths()
        name = "deployer-meter-" + self.app + ".service"
        if paths is None or (only_if_absent and (Path(self.c["systemd_unit_dir"]) / name).exists()):
            return
        agent_path, environment = paths
        region = getattr(self.args, "region", "") or ""
        flags = '"--app=' + self.app + '"' + (' "--region=' + region + '"' if region else "")
        unit = (
            "[Unit]\n"
            "Description=deployer: proxy metrics of " + self.app + "\n"
            "Wants=network-online.target\n"
            "After=network-online.target nginx.service\n\n"
            "[Service]\n"
            "Type=simple\n" + environment +
            "ExecStart=/usr/bin/env python3 " + agent_path + " meter " + flags + "\n"
            "Restart=always\n"
            "RestartSec=5\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )
        self.install_unit(name, unit, [["daemon-reload"], ["enable", name], ["restart", name]],
                          "the proxy's metrics go to CloudWatch")

    def prefer_live_release(self, state: dict[str, Any]) -> None:
        """Boot without a readable pointer keeps what already runs rather than the baked release.

        A re-run of the boot command (e.g. after a reboot) must never downgrade the host to the
        release baked into its launch template when a newer one is live.
        """
        if self.args.mode != "boot" or self.pointer_read:
            return
        release, image = state.get("release"), str(state.get("image") or "")
        if not isinstance(release, int) or release == self.release or not re.match(PATTERNS["image"], image):
            return
        colour = self.live_colour(state)
        info = self.host.inspect(self.container_name(colour)) if colour else None
        if not info or not info.get("State", {}).get("Running"):
            return
        try:
            self.set_release_config(str(state.get("release_config") or ""))
        except ValueError:
            return  # the live release's config is unknown here: boot the baked release instead
        log(f"boot: release {release} is live here; keeping it instead of the baked release {self.release}")
        self.messages.append(f"live release {release} kept over baked release {self.release}")
        self.release, self.image, self.digest = release, image, image.rsplit("@", 1)[1]

    def served_configs(self, state: dict[str, Any], digest: str | None = None) -> list[str]:
        """The configs this run's image (or ``digest``) went live with on this host, oldest first
        (an entry written before configs were recorded served with none)."""
        digest = digest or self.digest
        for entry in state.get("retained", []):
            if isinstance(entry, dict) and entry.get("digest") == digest:
                return [c for c in entry.get("configs", [""]) if isinstance(c, str)]
        return []

    def live_state(self, state: dict[str, Any], colour: str) -> dict[str, Any]:
        """The state recording this run's release as live on ``colour``. The image it replaces
        becomes the previous release (the rollback target); the same image under a new number
        keeps the previous one."""
        retained = [e for e in state.get("retained", []) if isinstance(e, dict)
                    and e.get("digest") != self.digest]
        configs = [c for c in self.served_configs(state) if c != self.config_id][1 - RETAINED_CONFIGS:]
        retained.append({"release": self.release, "digest": self.digest, "image": self.image,
                         "at": now_iso(), "configs": [*configs, self.config_id]})
        replaced = state.get("digest") != self.digest or state.get("config_id", "") != self.config_id
        return {
            "app": self.app, "release": self.release, "digest": self.digest, "image": self.image,
            # names, secret ids and versions only; the encoded config holds no secret value
            "config_id": self.config_id, "release_config": self.release_config,
            "config": {"environment": [name for name, _ in self.config["environment"]],
                       "secrets": self.config["secrets"]},
            "colour": colour, "port": self.colour_port(colour), "container": self.container_name(colour),
            "host": self.c["host_id"], "updated_at": now_iso(),
            "previous_release": state.get("release") if replaced else state.get("previous_release"),
            "previous_digest": state.get("digest") if replaced else state.get("previous_digest"),
            "retained": retained,
        }

    def record_live(self, state: dict[str, Any], colour: str) -> dict[str, Any]:
        """The state for the release already serving on ``colour``, saved when it differs."""
        live = state.get("release")
        if state.get("digest") == self.digest and state.get("colour") == colour:
            self.previous_release = state.get("previous_release")
            if live == self.release:
                return state
            # A rollback to the image already serving: only the release number changes.
            self.previous_release = live if isinstance(live, int) else None
            self.messages.append(f"its image already served as release {live}; release number recorded")
            log(f"release {self.release} runs the image of live release {live}: recorded, nothing swapped")
        else:
            # An earlier run switched traffic to this release and was stopped before recording it.
            self.previous_release = (live if state.get("digest") != self.digest
                                     else state.get("previous_release"))
            self.messages.append("an interrupted run had switched to it; state recorded")
            log(f"release {self.release} already serves on {colour}; recording it")
        recorded = self.live_state(state, colour)
        self.state.save(recorded)
        return recorded

    def finish(self, recorded: dict[str, Any]) -> None:
        """Converge the host on the live release: remove every other container of the app (but
        the standby, when one is recorded) and prune images; anything that fails here is the
        cleanup warning."""
        standby = recorded.get("standby") if isinstance(recorded.get("standby"), dict) else None
        problems = self.converge(str(recorded["colour"]), str(standby["colour"]) if standby else None)
        retained = [e for e in recorded.get("retained", []) if isinstance(e, dict)]
        keep = {str(e.get("digest")) for e in retained[-int(self.args.retain):]}
        keep.add(self.digest)
        if standby:
            keep.add(str(standby.get("digest")))
        if recorded.get("previous_digest"):
            keep.add(str(recorded["previous_digest"]))  # the rollback target
        kept, prune_problems = self.prune(retained, keep)
        if kept != retained:
            self.state.save({**recorded, "retained": kept})
        problems += prune_problems
        if problems:
            self.warning = "cleanup"
            self.warning_message = f"release {self.release} is live, but: " + "; ".join(problems)

    # the standby (a canary host keeps the stable release warm: docs/agent.md, "Standby")

    def standby_record(self, state: dict[str, Any], colour: str | None) -> dict[str, Any] | None:
        """What the container on ``colour`` runs, from its labels, to keep it as the standby; None
        when it is not running, runs this run's release, or runs an image and config that never
        went live here (a container an interrupted run started is no standby)."""
        if colour is None:
            return None
        name = self.container_name(colour)
        info = self.host.inspect(name)
        if not info or not info.get("State", {}).get("Running"):
            return None
        labels = info.get("Config", {}).get("Labels") or {}
        release, digest = str(labels.get("deployer.release", "")), str(labels.get("deployer.digest", ""))
        config = str(labels.get("deployer.config", ""))
        if not release.isdigit() or (digest, config) == (self.digest, self.config_id):
            return None
        if config not in self.served_configs(state, digest):
            return None
        return {"release": int(release), "digest": digest, "config_id": config, "colour": colour,
                "container": name, "image": str(info.get("Config", {}).get("Image", ""))}

    def keep_or_drop_standby(self, recorded: dict[str, Any], colour: str) -> dict[str, Any]:
        """The recorded state with the standby ``--keep-standby`` asks for (the container on
        ``colour``) or none, saved when it changes."""
        standby = self.standby_record(recorded, colour) if self.keep_standby else None
        if recorded.get("standby") == standby:
            return recorded
        recorded = {**recorded, "standby": standby}
        self.state.save(recorded)
        return recorded

    def standby_serves(self, state: dict[str, Any], colour: str, info: dict[str, Any] | None) -> bool:
        """Whether the container on ``colour`` (not live; ``info``: its inspection) runs this
        run's image and config, went live here before, runs and answers its health path once:
        then it is switched to as is."""
        started = time.monotonic()
        if info is None or self.config_id not in self.served_configs(state) or not self.serving(colour, info):
            return False
        # Only the fast path's summary has this phase: the check that chose it.
        self.timings["standby"] = round(time.monotonic() - started, 3)
        return True

    def switch_to_standby(self, state: dict[str, Any], old: str) -> str:
        """Instant abort: one atomic rule switch to the standby container; no pull, no start."""
        standby = self.other_colour(old)
        log(f"release {self.release} runs in the standby container {self.container_name(standby)}: "
            "switching to it (no pull, no start)")
        self.phase = "switch"
        self.switch(standby, old)
        self.phase = "cleanup"
        recorded = self.live_state(state, standby)
        self.previous_release = recorded["previous_release"]
        self.state.save(recorded)
        recorded = self.keep_or_drop_standby(recorded, old)
        self.messages.append("switched to the standby container; no pull, no start")
        self.finish(recorded)
        return "live"

    def execute_locked(self) -> str:
        state = self.state.load()
        self.previous_release = state.get("release")
        self.prefer_live_release(state)
        self.phase = "switch"
        self.ensure_site()
        old = self.live_colour(state)
        # Both colours in one docker call: the abort's fast path is counted in milliseconds.
        infos = self.host.inspect_both([self.container_name(c) for c in COLOURS]) if old is not None else {}
        old_info = infos.get(self.container_name(old)) if old is not None else None
        if old is not None and self.serving(old, old_info):
            if self.host.dnat_target() != self.colour_port(old):
                proc = self.host.set_dnat(self.colour_port(old), f"app {self.app} release {self.release}")
                if proc.returncode != 0:
                    raise Failure("switch", "restoring the traffic rule failed: " + last_line(proc.stderr))
                log("traffic rule restored for the live release")
            recorded = self.record_live(state, old)
            # Heals a run killed between the switch and its line (the meter attributes the
            # requests in between to the release before: that gap is all that is lost).
            self.record_switch(self.release, self.colour_port(old), only_if_changed=True)
            self.phase = "cleanup"
            recorded = self.keep_or_drop_standby(recorded, self.other_colour(old))
            self.finish(recorded)
            return "already_live"
        if old_info is None:
            old = None
        if old is not None:
            spare = self.other_colour(old)
            if self.standby_serves(state, spare, infos.get(self.container_name(spare))):
                return self.switch_to_standby(state, old)
        new = "green" if old == "blue" else "blue"
        self.phase = "config"
        self.fetch_config()
        self.phase = "pull"
        self.pull()
        self.phase = "start"
        self.start(new)
        self.phase = "health"
        # The short gate only for an image and config that already went live here together.
        self.health_gate(new, served_here=self.config_id in self.served_configs(state))
        self.phase = "switch"
        self.switch(new, old)
        self.phase = "cleanup"
        recorded = self.live_state(state, new)
        self.previous_release = recorded["previous_release"]
        self.state.save(recorded)
        if old is not None:
            recorded = self.keep_or_drop_standby(recorded, old)
        self.finish(recorded)
        return "live"


# --- the release task -------------------------------------------------------------------------

# Same bounds as the control plane's (deployer.agent_contract): the argv is base64 of a compact
# JSON list of 1-32 printable-ASCII strings, each 1-512 characters; never read by a shell.
TASK_PATTERNS = {
    "argv": r"^[A-Za-z0-9+/=]{4,4096}$",
    "timeout": r"^[1-9][0-9]{1,4}$",
}
TASK_ARG = re.compile(r"^[\x20-\x7e]{1,512}$")
TASK_MAX_ARGS = 32
TASK_RECORDS_KEPT = 50  # per app: the newest releases' task records (a task is never re-sent for older)


def decode_task_argv(encoded: str) -> list[str]:
    """The task's argv from its --argv value; ValueError names what is wrong."""
    try:
        argv = json.loads(base64.b64decode(encoded, validate=True).decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("--argv is not base64 of a JSON list: " + str(exc)[:80]) from None
    if not isinstance(argv, list) or not 1 <= len(argv) <= TASK_MAX_ARGS:
        raise ValueError(f"--argv must be a list of 1 to {TASK_MAX_ARGS} strings")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str) or not TASK_ARG.match(arg) or "\n" in arg:
            raise ValueError(f"--argv item {i} must be 1-512 printable ASCII characters")
    return argv


def validate_task(args: argparse.Namespace) -> list[str]:
    """The task's flags against their patterns (the swap's for the flags it shares)."""
    problems = []
    for name in ("app", "image", "release", "env_file", "docker_options", "log_driver", "log_options",
                 "registry_login", "release_config"):
        value = getattr(args, name)
        if not re.match(PATTERNS[name], value) or "\n" in value:
            problems.append("--" + name.replace("_", "-") + " " + json.dumps(value)[:80]
                            + " does not match " + PATTERNS[name][:120])
    for name, pattern in TASK_PATTERNS.items():
        value = getattr(args, name)
        if not re.match(pattern, value) or "\n" in value:
            problems.append("--" + name + " " + json.dumps(value)[:80] + " does not match " + pattern)
    if problems:
        return problems
    try:
        decode_task_argv(args.argv)
    except ValueError as exc:
        problems.append(str(exc))
    if args.env_file and not os.path.isfile(args.env_file):
        problems.append("--env-file " + args.env_file + " is not a file on this host")
    if args.registry_login == "ecr" and not ECR_HOST.match(args.image.split("/", 1)[0]):
        problems.append("--registry-login ecr needs an ECR image reference, got " + args.image[:80])
    return problems


class TaskAgent(Agent):
    """Runs a release's task once: the record in the state dir answers every later request."""

    def __init__(self, config: dict[str, Any], args: argparse.Namespace) -> None:
        super().__init__(config, args)
        self.argv = decode_task_argv(args.argv)
        self.timeout = int(args.timeout)
        self.timings["task"] = 0.0
        self.record_path = self.state.dir / "tasks" / (str(self.release) + ".json")
        self.task_message = ""
        self.container_exit: int | None = None
        self.log_tail: list[str] = []

    def task_container(self) -> str:
        return self.c["host_id"] + "-" + self.app + "-task-" + str(self.release)

    def execute_task(self) -> str:
        lock = Lock(self.state.dir / "task.lock", float(self.c["lock_timeout"]))
        started = time.monotonic()
        lock.acquire()
        self.timed("lock", started)
        try:
            recorded = self.read_record()
            if recorded is not None:
                return self.answer(recorded, "ran before; not run again")
            self.phase = "config"
            self.fetch_config()
            self.phase = "pull"
            self.pull()
            self.phase = "task"
            return self.answer(self.run_task(), "ran")
        finally:
            lock.release()

    def read_record(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("exit_code"), int) else None

    def write_record(self, record: dict[str, Any]) -> None:
        """Atomically, readable by root only: the task's output may say anything."""
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_name(self.record_path.name + ".tmp")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        os.replace(str(tmp), str(self.record_path))
        records = []
        for path in self.record_path.parent.glob("*.json"):
            if path.stem.isdigit():
                records.append((int(path.stem), path))
        for _, path in sorted(records)[:-TASK_RECORDS_KEPT]:
            path.unlink(missing_ok=True)

    def answer(self, record: dict[str, Any], how: str) -> str:
        """The outcome a record says; a failed task raises its failure."""
        code = int(record["exit_code"])
        self.container_exit = code
        self.log_tail = [str(line)[:200] for line in record.get("log_tail", [])][-LOG_TAIL_LINES:]
        what = f"release task of release {self.release} {how}"
        if record.get("timed_out"):
            raise Failure("task", f"{what}: it ran past its timeout of {record.get('timeout')}s and was "
                          f"stopped (exit code {code})", container_exit=code, log_tail=self.log_tail)
        if code != 0:
            raise Failure("task", f"{what}: it exited with code {code}", container_exit=code,
                          log_tail=self.log_tail)
        self.task_message = f"{what}: exit code 0"
        return "task_succeeded"

    def task_run_args(self, name: str) -> list[str]:
        args = ["run", "--rm", "--name", name,
                "--label", "deployer.host=" + self.c["host_id"],
                "--label", "deployer.task=" + self.app,
                "--label", "deployer.release=" + str(self.release),
                "--label", "deployer.digest=" + self.digest,
                "--init", *self.release_run_options(name)]
        if self.c["network_mode"] == "host":
            args += ["--network", "host"]
        args += [o for o in self.args.docker_options.split(" ") if o]
        return [*args, self.image, *self.argv]

    def run_task(self) -> dict[str, Any]:
        """Run the argv in a one-shot container, its output streamed to stderr (and so to the
        command's output and its log group); stopped at the timeout. Returns the record written."""
        name = self.task_container()
        if self.host.inspect(name) is not None:
            # An earlier run died while its task ran (or before it was recorded): it is not run a
            # second time on a guess; an operator decides.
            raise Failure("task", f"a task container {name} from an earlier run exists; the task is not "
                          "run again (see docs/release-task.md)")
        if self.env_entries:
            try:
                self.host.write_env_file(name, self.env_entries)
            except OSError as exc:
                raise Failure("config", f"writing the env file of {name} failed: "
                              + str(exc.strerror or exc)) from None
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        started = time.monotonic()
        timed_out = False
        log(f"release task of release {self.release}: {json.dumps(self.argv)[:300]} "
            f"(timeout {self.timeout}s)")
        proc = subprocess.Popen([*self.host.docker_cmd, *self.task_run_args(name)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def stream() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line[:200])
                sys.stderr.write("task| " + line + "\n")
                sys.stderr.flush()

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            log(f"release task ran past {self.timeout}s; stopping {name}")
            self.host.docker("kill", name, timeout=30)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        self.host.remove_container(name)
        self.timed("task", started)
        record = {"app": self.app, "release": self.release, "digest": self.digest,
                  "exit_code": proc.returncode if proc.returncode >= 0 else 128 - proc.returncode,
                  "timed_out": timed_out, "timeout": self.timeout, "log_tail": list(tail),
                  "finished_at": now_iso()}
        self.write_record(record)
        return record


# --- summary ----------------------------------------------------------------------------------


def fitted_json(data: dict[str, Any], shorten: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    """Compact JSON under SUMMARY_MAX_CHARS (SSM returns 2,500 characters of output): drops the
    oldest log-tail lines first, then applies `shorten` as the last resort."""
    data = dict(data)
    data["log_tail"] = [str(line)[:200] for line in data.get("log_tail", [])][-LOG_TAIL_LINES:]
    text = json.dumps(data, separators=(",", ":"))
    while len(text) > SUMMARY_MAX_CHARS and data["log_tail"]:
        data["log_tail"] = data["log_tail"][1:]
        text = json.dumps(data, separators=(",", ":"))
    if len(text) > SUMMARY_MAX_CHARS:
        text = json.dumps(shorten(data), separators=(",", ":"))
    return text


def summary_line(data: dict[str, Any]) -> str:
    """The run's summary, fitted: trims the log tail, then the message."""
    return fitted_json(data, lambda d: {**d, "message": str(d.get("message", ""))[:200]})


def base_summary(host_id: str, app: str) -> dict[str, Any]:
    return {
        "agent": "deployer", "version": VERSION, "host": host_id, "app": app,
        "release": None, "digest": None, "outcome": "failed", "failure_class": "none",
        "warning": None, "exit_code": 0, "message": "", "previous_release": None,
        "timings": {}, "pull_attempts": 0, "container_exit": None, "log_tail": [],
    }


def status(config: dict[str, Any], app: str) -> dict[str, Any]:
    root = Path(config["state_dir"])
    apps = {}
    for state_file in sorted(root.glob("*/state.json")):
        if app and state_file.parent.name != app:
            continue
        apps[state_file.parent.name] = State(config, state_file.parent.name).load()
    return {"agent": "deployer", "version": VERSION, "host": config["host_id"],
            "dnat_port": Host(config).dnat_target(), "apps": apps}


# --- diagnose (read-only) ---------------------------------------------------------------------

# Layers in the order a failure in one explains failures in the next: a stopped Docker engine
# fails every container check; an unhealthy app fails the check through the proxy.
DIAGNOSE_LAYERS = ("docker", "app", "proxy", "registry")
DISK_MIN_FREE_BYTES = 1 << 30
DISK_MIN_FREE_RATIO = 0.05


def failing_layer(checks: list[dict[str, Any]]) -> str:
    """The first layer (DIAGNOSE_LAYERS order) with a failed check, or "none"."""
    for layer in DIAGNOSE_LAYERS:
        if any(not c.get("ok") for c in checks if c.get("layer") == layer):
            return layer
    return "none"


def registry_reachable(image: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the image's registry answers its API root (/v2/): 200 or 401 both mean it is up."""
    host = image.split("/", 1)[0]
    name, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isdigit() else 443
    errors = []
    schemes = ("https", "http") if port != 443 else ("https",)
    for scheme in schemes:
        conn_class = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conn_class(name, port, timeout=timeout)
        try:
            conn.request("GET", "/v2/", headers={"User-Agent": "deployer-agent"})
            answer = conn.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(scheme + ": " + str(exc)[:120])
            continue
        finally:
            conn.close()
        if answer.status in (200, 401):
            return True, f"{host} answers {answer.status} on /v2/ ({scheme})"
        errors.append(f"{scheme}: /v2/ answered {answer.status}")
    return False, f"{host} unreachable: " + "; ".join(errors)


def proxy_master(config: dict[str, Any]) -> int | None:
    """The pid of the running nginx master named by the pid file, or None."""
    try:
        pid = int(Path(str(config["nginx_pid_file"])).read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return pid if "master process" in cmdline and state not in ("Z", "X") else None


def env_file_check(check: Callable[..., None], host: Host, name: str, state: dict[str, Any]) -> None:
    """The live container's env file: there, 0600 in a 0700 directory, when its release has a
    config; absent otherwise. Names and versions come from the state; the file is never read."""
    path = host.env_path(name)
    wanted = bool(state.get("config_id"))
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    names = [str(n) for n in config.get("environment", [])] + [
        f"{s.get('var')} ({s.get('from')} version {s.get('version')})"
        for s in config.get("secrets", []) if isinstance(s, dict)]
    try:
        mode = path.stat().st_mode & 0o777
        dir_mode = path.parent.stat().st_mode & 0o777
    except OSError:
        mode = dir_mode = None
    if mode is None:
        absent = f"{path}: absent" + ("; the release has a config" if wanted else "")
        check("env file", "app", not wanted, absent, container=name, env_file=None)
        return
    ok = wanted and mode == 0o600 and dir_mode == 0o700
    detail = f"{path}: mode {mode:04o} (directory {dir_mode:04o})" + (
        "; " + ", ".join(names) if wanted else "; the release has no config")
    check("env file", "app", ok, detail, container=name, env_file=str(path), mode=f"{mode:04o}")


def diagnose(config: dict[str, Any], app: str, health_path: str) -> dict[str, Any]:
    """Read-only checks of one app on this host; names the first failing layer."""
    host = Host(config)
    state = State(config, app).load()
    checks: list[dict[str, Any]] = []

    def check(name: str, layer: str, ok: bool, detail: str, **extra: Any) -> None:
        checks.append({"name": name, "layer": layer, "ok": bool(ok), "detail": detail[:300], **extra})

    info = host.docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    docker_ok = info.returncode == 0
    engine = ("server " + info.stdout.strip() if docker_ok
              else last_line(info.stderr) or f"exit {info.returncode}")
    check("docker engine", "docker", docker_ok, engine)
    for path in dict.fromkeys((str(config["state_dir"]), "/var/lib/docker")):
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = shutil.disk_usage(str(probe))
        free_ok = usage.free >= DISK_MIN_FREE_BYTES and usage.free >= usage.total * DISK_MIN_FREE_RATIO
        check("disk space " + path, "docker", free_ok,
              f"{usage.free // (1 << 20)} MiB free of {usage.total // (1 << 20)} MiB")

    target = host.dnat_target()
    colour = next((c for c in COLOURS if target == int(config[c + "_port"])), None)
    live_colour = colour or (state.get("colour") if state.get("colour") in COLOURS else None)
    log_tail: list[str] = []
    if not state:
        check("release state", "app", False, "no release of " + app + " was ever deployed on this host")
    if docker_ok and live_colour:
        name = str(config["host_id"]) + "-" + app + "-" + live_colour
        container = host.inspect(name)
        running = bool(container and container.get("State", {}).get("Running"))
        labels = (container or {}).get("Config", {}).get("Labels") or {}
        status_text = (container or {}).get("State", {}).get("Status", "missing")
        check("live container", "app", running,
              f"{name}: {status_text}, release {labels.get('deployer.release', '?')}",
              container=name, release=labels.get("deployer.release"))
        if container is not None:
            log_tail = host.log_tail(name)
        port = int(config[live_colour + "_port"])
        code = http_status(port, health_path) if running else 0
        check("app health", "app", 200 <= code < 300,
              f"GET {health_path} on port {port} answered {code or 'nothing'}")
        env_file_check(check, host, name, state)
    containers = app_container_roles(host, config, app, state, live_colour) if docker_ok else []
    for entry in containers:
        if entry["role"] == "standby":
            check("standby container", "app", True,
                  f"{entry['name']}: {entry['state']}, release {entry['release']}, drained (no traffic "
                  "reaches it); switched back to on abort, removed once the release passes",
                  container=entry["name"], release=entry["release"])
        elif entry["role"] == "leftover":
            # Every agent run removes it; one left means a run was interrupted or its cleanup
            # failed. Rollback needs only the retained image, never this container.
            check("leftover container", "app", False,
                  f"{entry['name']}: {entry['state']}, release {entry['release']}; the next agent run "
                  "removes it", container=entry["name"])
    if containers:
        check("container bound", "app", len(containers) <= MAX_APP_CONTAINERS,
              f"{len(containers)} containers of {app}, at most {MAX_APP_CONTAINERS} (live and standby)")
    if docker_ok and live_colour:
        roles = {e["name"]: e["role"] for e in containers}
        for other in COLOURS:
            spare_name = str(config["host_id"]) + "-" + app + "-" + other
            spare_env = host.env_path(spare_name)
            if other != live_colour and roles.get(spare_name) != "standby" and spare_env.exists():
                check("leftover env file", "app", False, f"{spare_env}: the next agent run removes it",
                      env_file=str(spare_env))
    check("proxy target", "proxy", target is not None and target == (
        int(config[live_colour + "_port"]) if live_colour else -1),
          f"stable port {config['stable_port']} -> " + (f"127.0.0.1:{target}" if target else "no DNAT rule")
          + (f" ({colour})" if colour else ""))
    master = proxy_master(config)
    check("proxy master", "proxy", master is not None,
          f"nginx master pid {master}" if master else
          "no nginx master process (pid file " + str(config["nginx_pid_file"]) + "); workers left "
          "by a killed master serve until they exit, and nothing reloads them")
    listening = host.listening()
    front = http_status(int(config["listen_port"]), health_path) if listening else 0
    check("proxy answers", "proxy", 200 <= front < 300,
          f"nginx on port {config['listen_port']}: " + (f"GET {health_path} answered {front or 'nothing'}"
                                                         if listening else "not listening"))
    image = str(state.get("image") or "")
    if image:
        ok, detail = registry_reachable(image)
        check("registry", "registry", ok, detail)
    layer = failing_layer(checks)
    return {"agent": "deployer", "version": VERSION, "host": config["host_id"], "app": app,
            "release": state.get("release"), "layer": layer, "checks": checks,
            "containers": containers, "container_bound": MAX_APP_CONTAINERS, "log_tail": log_tail}


def app_container_roles(host: Host, config: dict[str, Any], app: str, state: dict[str, Any],
                        live_colour: str | None) -> list[dict[str, Any]]:
    """Every container of ``app`` on this host with its role: live (the colour traffic goes to),
    standby (the running container the state records as the standby) or leftover."""
    proc = host.docker("ps", "-a", "--filter", "label=deployer.host=" + str(config["host_id"]),
                       "--filter", "label=deployer.app=" + app, "--format",
                       '{{.Names}}\t{{.State}}\t{{.Label "deployer.release"}}', timeout=30)
    if proc.returncode != 0:
        return []
    prefix = str(config["host_id"]) + "-" + app + "-"
    standby = state.get("standby") if isinstance(state.get("standby"), dict) else {}
    found = []
    for line in sorted(proc.stdout.splitlines()):
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0]:
            continue
        name, status_text, release = fields
        role = "leftover"
        if live_colour and name == prefix + live_colour:
            role = "live"
        elif name == standby.get("container") and status_text == "running":
            role = "standby"
        found.append({"name": name, "state": status_text,
                      "release": int(release) if release.isdigit() else None, "role": role})
    return found


# --- meter: per-release proxy metrics -----------------------------------------------------------

# Contract with the controller's analysis (deployer.metrics_names): namespace, metric names,
# dimensions App and Release.
PROXY_NAMESPACE = "Deployer/Proxy"
PROXY_REQUESTS = "Requests"
PROXY_ERRORS = "Errors5xx"
PROXY_LATENCY = "Latency"
# PutMetricData's limits: 150 values per datum, 1000 datums and 1 MB per call (a margin is kept
# for the request's own encoding).
METER_MAX_VALUES = 150
METER_MAX_DATUMS = 1000
METER_MAX_PAYLOAD = 800_000
METER_BUFFER_DATUMS = 20_000  # unsent datums kept for retries; the oldest batches go first
METER_SEND_TIMEOUT = 60
ACCESS_LOG_MAX_BYTES = 64 << 20  # the meter rotates the log once it has read this much
METER_OFFSET_FILE = "meter.offset"  # under <state_dir>/<app>/: where the last flush stopped


# The meter calls CloudWatch itself (SigV4 over the query protocol) rather than through the AWS
# CLI: a CLI process costs about half a CPU-second, every interval, on every host.
IMDS_ADDRESS = "169.254.169.254"
IMDS_TIMEOUT = 2.0
CREDENTIALS_REFRESH = 300  # seconds before the instance role's credentials expire


def imds(path: str, token: str | None = None, method: str = "GET") -> str:
    """One IMDSv2 read (the token request when ``token`` is None and ``method`` is PUT)."""
    headers = ({"X-aws-ec2-metadata-token-ttl-seconds": "21600"} if token is None
               else {"X-aws-ec2-metadata-token": token})
    request = urllib.request.Request("http://" + IMDS_ADDRESS + path, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=IMDS_TIMEOUT) as answer:  # noqa: S310 - fixed http URL
        return str(answer.read().decode("utf-8"))


class AwsCredentials:
    """The credentials the AWS CLI would use on a host: the environment's when set (the local
    cloud; a host given static keys), else the instance role's from IMDSv2, cached until
    CREDENTIALS_REFRESH seconds before they expire."""

    def __init__(self) -> None:
        self.cached: tuple[str, str, str] | None = None
        self.expires = 0.0

    def get(self) -> tuple[str, str, str]:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if key and secret:
            return key, secret, os.environ.get("AWS_SESSION_TOKEN", "")
        if self.cached is not None and time.time() < self.expires:
            return self.cached
        token = imds("/latest/api/token", method="PUT")
        role = imds("/latest/meta-data/iam/security-credentials/", token).split()[0]
        data = json.loads(imds("/latest/meta-data/iam/security-credentials/" + role, token))
        self.cached = (str(data["AccessKeyId"]), str(data["SecretAccessKey"]), str(data.get("Token", "")))
        expiration = datetime.datetime.strptime(str(data["Expiration"]), "%Y-%m-%dT%H:%M:%SZ")
        utc = datetime.timezone.utc  # noqa: UP017 - hosts run Python 3.9
        self.expires = expiration.replace(tzinfo=utc).timestamp() - CREDENTIALS_REFRESH
        return self.cached


def aws_region(region: str) -> str:
    """The region to call: the given one, the environment's, else the instance's (IMDSv2)."""
    for candidate in (region, os.environ.get("AWS_REGION", ""), os.environ.get("AWS_DEFAULT_REGION", "")):
        if candidate and re.fullmatch(PATTERNS["region"], candidate):
            return candidate
    found = imds("/latest/meta-data/placement/region", imds("/latest/api/token", method="PUT")).strip()
    if not re.fullmatch(PATTERNS["region"], found):
        raise ValueError("the instance's region is unknown")
    return found


def cloudwatch_endpoint(region: str) -> str:
    """AWS_ENDPOINT_URL_CLOUDWATCH / AWS_ENDPOINT_URL as the AWS CLI reads them, else the
    region's public endpoint."""
    for name in ("AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name].rstrip("/") + "/"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return "https://monitoring." + region + "." + suffix + "/"


def query_fields(prefix: str, value: Any) -> list[tuple[str, str]]:
    """The query protocol's flattening: a structure's members as Prefix.Name, a list's as
    Prefix.member.N (from 1)."""
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in query_fields(prefix + "." + k if prefix else k, v)]
    if isinstance(value, list):
        return [f for i, v in enumerate(value, 1) for f in query_fields(prefix + ".member." + str(i), v)]
    return [(prefix, format(value, "g") if isinstance(value, float) else str(value))]


def put_metric_data_body(namespace: str, datums: list[dict[str, Any]]) -> bytes:
    fields = [("Action", "PutMetricData"), ("Version", "2010-08-01"), ("Namespace", namespace)]
    fields += query_fields("MetricData", datums)
    return urllib.parse.urlencode(fields, quote_via=urllib.parse.quote).encode("ascii")


def query_batches(batch: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``batch`` in halves until each encodes under the payload limit (the query protocol
    repeats every member's path, so it is larger than the batch's JSON)."""
    if len(batch) <= 1 or len(put_metric_data_body(PROXY_NAMESPACE, batch)) <= METER_MAX_PAYLOAD:
        return [batch]
    half = len(batch) // 2
    return query_batches(batch[:half]) + query_batches(batch[half:])


def sigv4_headers(url: str, body: bytes, *, service: str, region: str,
                  credentials: tuple[str, str, str], at: datetime.datetime) -> dict[str, str]:
    """The headers of a form POST signed with Signature Version 4 (AWS's documented steps:
    canonical request, string to sign, derived key)."""
    key, secret, token = credentials
    parts = urllib.parse.urlsplit(url)
    amz_date = at.strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8",
               "host": parts.netloc, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        "POST", urllib.parse.quote(parts.path or "/", safe="/-_.~"), parts.query,
        "".join(k + ":" + headers[k].strip() + "\n" for k in sorted(headers)), signed,
        hashlib.sha256(body).hexdigest()])
    scope = "/".join([amz_date[:8], region, service, "aws4_request"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    signing = ("AWS4" + secret).encode("utf-8")
    for part in (amz_date[:8], region, service, "aws4_request"):
        signing = hmac.new(signing, part.encode("utf-8"), hashlib.sha256).digest()
    signature = hmac.new(signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["authorization"] = ("AWS4-HMAC-SHA256 Credential=" + key + "/" + scope
                                + ", SignedHeaders=" + signed + ", Signature=" + signature)
    return headers


def parse_access_line(line: str) -> tuple[float, int, float] | None:
    """(end epoch seconds, status, request seconds) of one access-log line, or None when the
    line is not one the site's log_format wrote."""
    try:
        data = json.loads(line)
        end, status, took = float(data["t"]), int(data["s"]), float(data["rt"])
    except (ValueError, KeyError, TypeError):
        return None
    if not (end > 0 and 100 <= status <= 599 and took >= 0):
        return None
    return end, status, took


def load_switches(text: str) -> list[tuple[float, int]]:
    """(at, release) of each well-formed line of a switches file, in time order."""
    found = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
            at, release = float(data["at"]), data["release"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(release, int) and not isinstance(release, bool) and release > 0:
            found.append((at, release))
    return sorted(found)


def release_at(switches: list[tuple[float, int]], started: float) -> int | None:
    """The release the stable port sent new requests to at ``started``: the last switch at or
    before it. A request older than every line (the file was compacted) belongs to none."""
    live = None
    for at, release in switches:
        if at > started:
            break
        live = release
    return live


def quantize_ms(ms: float) -> float:
    """Two significant digits (at most 5 % off; nginx logs whole milliseconds): few distinct
    values per second, so a datum's Values array stays short."""
    if ms < 100:
        return float(round(ms))
    scale = 10 ** (len(str(int(ms))) - 2)
    return float(round(ms / scale) * scale)


class MeterBuckets:
    """Requests counted per (release or None, whole second they ended in)."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[int | None, int], dict[str, Any]] = {}

    def add(self, release: int | None, end: float, status: int, took: float) -> None:
        key = (release, int(end))
        bucket = self.buckets.setdefault(key, {"requests": 0, "errors": 0, "latency": collections.Counter()})
        bucket["requests"] += 1
        bucket["errors"] += 1 if 500 <= status <= 599 else 0
        bucket["latency"][quantize_ms(took * 1000.0)] += 1

    def take(self) -> dict[tuple[int | None, int], dict[str, Any]]:
        taken, self.buckets = self.buckets, {}
        return taken


def _timestamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def metric_datums(app: str, buckets: dict[tuple[int | None, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The PutMetricData datums of ``buckets``: per release (dimensions App, Release) and app-wide
    (App only, every request, attributed or not), each second with Requests, Errors5xx and
    Latency (Values/Counts, split over several datums when a second has over 150 values)."""
    per_second: dict[int, dict[str, Any]] = {}
    groups: list[tuple[list[dict[str, str]], int, dict[str, Any]]] = []
    for (release, second), bucket in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0] or 0)):
        total = per_second.setdefault(second, {"requests": 0, "errors": 0, "latency": collections.Counter()})
        total["requests"] += bucket["requests"]
        total["errors"] += bucket["errors"]
        total["latency"].update(bucket["latency"])
        if release is not None:
            groups.append(([{"Name": "App", "Value": app}, {"Name": "Release", "Value": str(release)}],
                           second, bucket))
    groups += [([{"Name": "App", "Value": app}], second, total)
               for second, total in sorted(per_second.items())]
    datums: list[dict[str, Any]] = []
    for dimensions, second, bucket in groups:
        if not bucket["requests"]:
            continue
        common = {"Dimensions": dimensions, "Timestamp": _timestamp(second), "StorageResolution": 1}
        datums.append({"MetricName": PROXY_REQUESTS, **common, "Value": bucket["requests"], "Unit": "Count"})
        datums.append({"MetricName": PROXY_ERRORS, **common, "Value": bucket["errors"], "Unit": "Count"})
        values = sorted(bucket["latency"].items())
        for start in range(0, len(values), METER_MAX_VALUES):
            chunk = values[start:start + METER_MAX_VALUES]
            datums.append({"MetricName": PROXY_LATENCY, **common, "Values": [v for v, _ in chunk],
                           "Counts": [float(c) for _, c in chunk], "Unit": "Milliseconds"})
    return datums


def datum_batches(datums: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``datums`` in PutMetricData calls: at most 1000 datums and METER_MAX_PAYLOAD bytes each."""
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = 0
    for datum in datums:
        weight = len(json.dumps(datum, separators=(",", ":"))) + 1
        if batch and (len(batch) >= METER_MAX_DATUMS or size + weight > METER_MAX_PAYLOAD):
            batches.append(batch)
            batch, size = [], 0
        batch.append(datum)
        size += weight
    if batch:
        batches.append(batch)
    return batches


class Meter:
    """`agent.py meter --app APP`: tails the app's access log, attributes each request to the
    release live when it started (the switches file), and every meter_interval seconds sends
    what it counted with one PutMetricData (signed here, instance role). Runs until SIGTERM, which
    flushes once more."""

    def __init__(self, config: dict[str, Any], app: str, region: str = "") -> None:
        self.c = config
        self.app = app
        self.region = region or config["region"] or ""
        self.interval = float(config["meter_interval"])
        self.log_path = access_log_path(config, app)
        self.state_dir = Path(config["state_dir"]) / app
        self.switches_path = self.state_dir / SWITCHES_FILE
        self.offset_path = self.state_dir / METER_OFFSET_FILE
        self.buckets = MeterBuckets()
        self.unsent: collections.deque[list[dict[str, Any]]] = collections.deque()
        self.handle: Any = None
        self.inode: int | None = None
        self.position = 0
        self.partial = b""
        self.switches: list[tuple[float, int]] = []
        self.switches_seen: tuple[int, int] | None = None
        self.stopping = False
        self.agent_mtime = self._agent_mtime()
        self.credentials = AwsCredentials()

    # the access log

    def resume(self) -> None:
        """Open the log where the last flush stopped: the recorded offset when it is the same
        file, the start of a file the meter never saw (rotated while it was down), the end when
        there is no record (nothing is counted twice)."""
        try:
            saved = json.loads(self.offset_path.read_text(encoding="utf-8"))
            saved_inode, saved_offset = int(saved["inode"]), int(saved["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            saved_inode, saved_offset = None, None
        if not self.open_log():
            return
        size = os.fstat(self.handle.fileno()).st_size
        if saved_inode is None:
            self.position = size
        elif saved_inode == self.inode and saved_offset is not None and saved_offset <= size:
            self.position = saved_offset
        else:
            self.position = 0
        self.handle.seek(self.position)

    def open_log(self) -> bool:
        try:
            self.handle = self.log_path.open("rb")
        except OSError:
            self.handle, self.inode = None, None
            return False
        self.inode = os.fstat(self.handle.fileno()).st_ino
        self.position, self.partial = 0, b""
        return True

    def read_lines(self) -> list[str]:
        """The complete lines written since the last read; follows a rotation (the old file is
        read to its end first) and a truncation (read again from the start)."""
        if self.handle is None and not self.open_log():
            return []
        lines = self._read_available()
        try:
            current = os.stat(self.log_path).st_ino
        except OSError:
            current = None
        if current != self.inode and current is not None:
            self.handle.close()
            self.open_log()
            lines += self._read_available()
        return lines

    def _read_available(self) -> list[str]:
        if os.fstat(self.handle.fileno()).st_size < self.position:
            log(f"meter: {self.log_path} was truncated; reading it from the start")
            self.handle.seek(0)
            self.position, self.partial = 0, b""
        data = self.handle.read()
        self.position += len(data)
        data = self.partial + data
        complete, _, self.partial = data.rpartition(b"\n")
        return [line.decode("utf-8", "replace") for line in complete.split(b"\n") if line] if complete else []

    def save_offset(self) -> None:
        if self.inode is None:
            return
        done = self.position - len(self.partial)  # a half-written line is read again
        tmp = self.offset_path.with_name(METER_OFFSET_FILE + ".tmp")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"inode": self.inode, "offset": done}), encoding="utf-8")
            os.replace(str(tmp), str(self.offset_path))
        except OSError as exc:
            log(f"meter: offset not saved: {exc}")

    def rotate_if_large(self) -> None:
        """Keep the log bounded: once read past ACCESS_LOG_MAX_BYTES it becomes `.1` (replacing
        the previous one) and nginx reopens its logs; the rest of the old file is read before
        the new one."""
        if self.handle is None or self.position < ACCESS_LOG_MAX_BYTES:
            return
        try:
            os.replace(str(self.log_path), str(self.log_path) + ".1")
        except OSError as exc:
            log(f"meter: rotating {self.log_path} failed: {exc}")
            return
        proc = Host(self.c).nginx("-s", "reopen")
        log(f"meter: rotated {self.log_path}" + ("" if proc.returncode == 0
                                                  else "; nginx -s reopen failed: " + last_line(proc.stderr)))

    # attribution

    def refresh_switches(self) -> None:
        try:
            info = os.stat(self.switches_path)
        except OSError:
            self.switches, self.switches_seen = [], None
            return
        seen = (info.st_mtime_ns, info.st_size)
        if seen == self.switches_seen:
            return
        try:
            self.switches = load_switches(self.switches_path.read_text(encoding="utf-8"))
        except OSError:
            return
        self.switches_seen = seen

    def count(self, lines: list[str]) -> int:
        self.refresh_switches()
        counted = 0
        for line in lines:
            parsed = parse_access_line(line)
            if parsed is None:
                continue
            end, status, took = parsed
            self.buckets.add(release_at(self.switches, end - took), end, status, took)
            counted += 1
        return counted

    # sending

    def flush(self) -> None:
        """Count what the log gained, record how far it was read, then send (a crash after the
        record loses this interval's counts; none is ever sent twice)."""
        self.count(self.read_lines())
        datums = metric_datums(self.app, self.buckets.take())
        self.save_offset()
        self.rotate_if_large()
        self.unsent.extend(q for batch in datum_batches(datums) for q in query_batches(batch))
        while sum(len(b) for b in self.unsent) > METER_BUFFER_DATUMS:
            dropped = self.unsent.popleft()
            log(f"meter: {len(dropped)} unsent datums dropped (the retry buffer is full)")
        while self.unsent:
            if not self.send(self.unsent[0]):
                return
            self.unsent.popleft()

    def send(self, batch: list[dict[str, Any]]) -> bool:
        """One PutMetricData; True when it was sent, or dropped because its fate is unknown or
        CloudWatch refused its content."""
        body = put_metric_data_body(PROXY_NAMESPACE, batch)
        try:
            region = aws_region(self.region)
            url = cloudwatch_endpoint(region)
            headers = sigv4_headers(url, body, service="monitoring", region=region,
                                    credentials=self.credentials.get(),
                                    at=datetime.datetime.now(datetime.timezone.utc))  # noqa: UP017 - Python 3.9
        except (OSError, ValueError, KeyError, IndexError) as exc:
            log(f"meter: no credentials or region for PutMetricData ({exc}); kept for a retry")
            return False
        # The endpoint is https:// or the AWS CLI's own endpoint variable, never a file: URL.
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=METER_SEND_TIMEOUT) as answer:  # noqa: S310
                answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 400 and "Throttl" not in detail:
                # Invalid or refused content: sending it again gets the same answer.
                log(f"meter: PutMetricData refused ({exc.code}: {detail}); {len(batch)} datums dropped")
                return True
            log(f"meter: PutMetricData failed ({exc.code}: {detail}); kept for a retry")
            return False
        except socket.timeout:  # noqa: UP041 - not TimeoutError's alias before Python 3.10
            # It may have arrived: sending it again could count it twice.
            log(f"meter: PutMetricData timed out; {len(batch)} datums dropped")
            return True
        except OSError as exc:
            log(f"meter: PutMetricData failed ({exc}); kept for a retry")
            return False
        return True

    # the loop

    @staticmethod
    def _agent_mtime() -> int | None:
        try:
            return os.stat(os.path.abspath(__file__)).st_mtime_ns
        except OSError:
            return None

    def run(self) -> bool:
        """Until SIGTERM (returns False) or a new agent file on disk (returns True: the caller
        runs it, so an agent update reaches a meter that never stops)."""
        import signal  # noqa: PLC0415 - only the long-running meter handles signals

        def stop(_signum: int, _frame: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.resume()
        log(f"meter: {self.app} from {self.log_path} every {self.interval:g}s")
        next_flush = time.monotonic() + self.interval
        while not self.stopping:
            time.sleep(min(0.2, max(0.0, next_flush - time.monotonic())))
            if time.monotonic() < next_flush:
                continue
            next_flush = time.monotonic() + self.interval
            try:
                self.flush()
            except OSError as exc:  # a file it cannot read now; the next flush tries again
                log(f"meter: flush failed: {exc}")
            if self._agent_mtime() != self.agent_mtime:
                log("meter: the agent changed on disk; restarting with it")
                return True
        self.flush()
        return False


def run_meter(config: dict[str, Any], app: str, region: str) -> int:
    if Meter(config, app, region).run():
        argv = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
        os.execv(sys.executable, argv)  # noqa: S606 - the same interpreter and flags, no shell
    return 0


def report_line(report: dict[str, Any]) -> str:
    """The diagnosis, fitted: trims the log tail first, then each check's detail."""
    return fitted_json(report, lambda d: {
        **d, "checks": [{**c, "detail": str(c.get("detail", ""))[:60]} for c in d["checks"]]})


def checked_args(argv: list[str]) -> argparse.Namespace:
    """Parsed and validated flags; raises an input Failure naming every problem."""
    try:
        args = parse_args(argv)
    except UsageError as exc:
        if str(exc) == "help":
            sys.stderr.write(__doc__ or "")
            raise Failure("input", "usage shown; no mode given") from None
        raise Failure("input", "usage error: " + str(exc)) from None
    if args.mode == "status":
        if args.app and not re.match(PATTERNS["app"], args.app):
            raise Failure("input", "--app does not match " + PATTERNS["app"])
        return args
    if args.mode == "meter":
        names = ["app", "region"] if args.region else ["app"]
        for name in names:
            if not re.match(PATTERNS[name], getattr(args, name)):
                raise Failure("input", "--" + name + " does not match " + PATTERNS[name])
        return args
    if args.mode == "diagnose":
        for name in ("app", "health_path"):
            if not re.match(PATTERNS[name], getattr(args, name)):
                raise Failure("input", "--" + name.replace("_", "-") + " does not match " + PATTERNS[name])
        return args
    problems = validate_task(args) if args.mode == "task" else validate(args)
    if problems:
        raise Failure("input", "invalid input, nothing done: " + "; ".join(problems))
    return args


def main(argv: list[str]) -> int:
    started = time.monotonic()
    app_guess = ""
    for token in argv:
        if token.startswith("--app="):
            app_guess = token.split("=", 1)[1]
    if "--app" in argv[:-1]:
        app_guess = argv[argv.index("--app") + 1]
    summary = base_summary("", app_guess if re.match(PATTERNS["app"], app_guess) else "")
    agent: Agent | None = None
    try:
        config = load_host_config()
        summary["host"] = config["host_id"]
        args = checked_args(argv)
        if args.mode == "status":
            sys.stdout.write(json.dumps(status(config, args.app), separators=(",", ":")) + "\n")
            return 0
        if args.mode == "meter":
            return run_meter(config, args.app, args.region)
        if args.mode == "diagnose":
            report = diagnose(config, args.app, args.health_path)
            sys.stdout.write(report_line(report) + "\n")
            return 0
        if args.mode == "task":
            agent = TaskAgent(config, args)
            summary["outcome"] = agent.execute_task()
            summary["message"] = agent.task_message
            summary["container_exit"] = agent.container_exit
            summary["log_tail"] = agent.log_tail
        else:
            agent = Agent(config, args)
            outcome = agent.execute()
            summary["outcome"] = outcome
            summary["message"] = (f"release {agent.release} is already live" if outcome == "already_live"
                                  else f"release {agent.release} is live")
        if agent.warning:
            summary["warning"] = agent.warning
            summary["message"] = agent.warning_message
        if agent.messages:
            summary["message"] += " (" + "; ".join(agent.messages) + ")"
    except Failure as exc:
        summary["outcome"] = "failed"
        summary["failure_class"] = exc.failure_class
        summary["message"] = exc.message
        summary["container_exit"] = exc.container_exit
        summary["log_tail"] = exc.log_tail
    except Exception as exc:  # noqa: BLE001 - every invocation must end in one summary line
        if agent is not None and agent.phase in WARNING_CLASSES:
            # Traffic already switched: the new release serves whatever went wrong after.
            summary["outcome"] = "live"
            summary["warning"] = agent.phase
            summary["message"] = (f"release {agent.release} is live, but {agent.phase} failed: "
                                  f"{type(exc).__name__}: {exc}")
        else:
            summary["outcome"] = "failed"
            summary["failure_class"] = agent.phase if agent is not None else "input"
            summary["message"] = f"unexpected agent error: {type(exc).__name__}: {exc}"
    summary["exit_code"] = EXIT_CODES[summary["failure_class"]]
    if agent is not None:
        summary["release"] = agent.release
        summary["digest"] = agent.digest
        summary["previous_release"] = agent.previous_release
        summary["pull_attempts"] = agent.pull_attempts
        agent.timings["total"] = round(time.monotonic() - started, 3)
        summary["timings"] = agent.timings
    else:
        summary["timings"] = {"total": round(time.monotonic() - started, 3)}
    log(summary["message"])
    sys.stdout.write(summary_line(summary) + "\n")
    sys.stdout.flush()
    return int(summary["exit_code"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
