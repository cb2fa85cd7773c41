"""The hosts' AWS endpoint: a proxy on 127.0.0.1 in front of the moto server that lets a host's
call through only when the hosts' instance role allows it, and otherwise answers as AWS denies.

moto does not enforce IAM, so a host that called moto directly (the boot script's
`aws ssm get-document`, the agent's `aws ssm get-parameter` and `aws ecr get-login-password`)
would hide a grant missing from the documented host role (README, "What the hosts need").
Each host gets its own credentials (`credentials(instance_id)`), so a denial names the
instance as AWS's message names the role session (`assumed-role/deployer-host/<instance>`).

For each request the gate reads the service from the SigV4 credential scope, the operation from
`X-Amz-Target` (JSON protocols) or `Action=` (query protocols), decodes the parameters, and asks
`permissions` whether the role allows every (action, resource) the call needs. Allowed calls are
forwarded byte for byte; the answer comes back as moto gave it. The role is read from IAM on each
call, so a policy attached or detached mid-test applies to the next call. Denials are kept in
`denied` (one line each; also appended to `log` when given, for a cloud in another process) so
the local cloud and the tests can assert that none, or one, happened.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from localcloud.aws import permissions

_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
# Headers that belong to one hop, not to the request or answer being relayed.
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Call:
    """One signed request as IAM sees it: who, which service and operation, with what."""

    access_key: str
    region: str
    service: str
    operation: str
    params: dict[str, Any]
    protocol: str


def parse(headers: Any, path: str, body: bytes) -> Call | None:
    """The call a request makes, or None when it is not SigV4-signed."""
    scope = _SCOPE.search(headers.get("Authorization", ""))
    if scope is None:
        return None
    access_key, region, service = scope.groups()
    target = headers.get("X-Amz-Target")
    if target:
        params = json.loads(body) if body.strip() else {}
        return Call(access_key, region, service, target.rsplit(".", 1)[-1], params, "json")
    fields = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)
    flat = {k: v[0] for k, v in {**query, **fields}.items()}
    return Call(access_key, region, service, flat.pop("Action", ""), flat, "query")


class HostGate:
    """`role()` gives the hosts' `permissions.RoleCheck`, or None when there is no host role (then
    calls pass unchecked, as before the stack had one). `resolve` may rewrite a call's parameters
    to the resource AWS authorizes (a secret's name → its ARN); `implied` names what AWS also
    authorizes as the caller (kms:Decrypt on a customer-managed key of what the call reads)."""

    def __init__(
        self,
        upstream: str,
        role: Callable[[], permissions.RoleCheck | None],
        account: str,
        *,
        resolve: Callable[[Call], dict[str, Any]] | None = None,
        implied: Callable[[Call], list[tuple[str, str]]] | None = None,
        role_name: str = "deployer-host",
        log: Path | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.role = role
        self.account = account
        self.role_name = role_name
        self.resolve = resolve
        self.implied = implied
        self.log = log
        self.denied: list[str] = []
        self.allowed: list[str] = []
        self._sessions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the gate is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HostGate:
        gate = self

        class Handler(_Handler):
            pass

        Handler.gate = gate
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="host-gate", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- identities ----------------------------------------------------------------------
    def credentials(self, instance_id: str) -> dict[str, str]:
        """The instance-profile credentials of one host, as environment variables (with the gate
        as the host's AWS endpoint)."""
        key = "ASIA" + re.sub(r"[^A-Z0-9]", "", instance_id.upper())
        with self._lock:
            self._sessions[key] = instance_id
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": "host-secret",
            "AWS_SESSION_TOKEN": "host-session",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def principal(self, access_key: str) -> str:
        session = self._sessions.get(access_key, access_key)
        return f"arn:aws:sts::{self.account}:assumed-role/{self.role_name}/{session}"

    def record_denial(self, line: str) -> None:
        with self._lock:
            self.denied.append(line)
            if self.log is not None:
                with self.log.open("a") as f:
                    f.write(line + "\n")

    # -- the decision --------------------------------------------------------------------
    def decide(self, call: Call) -> tuple[str, str] | None:
        """The first (action, resource) the role does not allow, or None when it allows the call."""
        role = self.role()
        if role is None:
            return None
        params = self.resolve(call) if self.resolve else call.params
        needed = permissions.requirements(call.service, call.operation, params, role.region, role.account)
        needed += self.implied(call) if self.implied else []
        context = permissions.condition_context(call.service, call.operation, params)
        for action, resource in needed:
            if not permissions.allowed(role.statements, action, resource, context):
                return action, resource
        return None


def denial(call: Call, principal: str, action: str, resource: str) -> tuple[int, dict[str, str], bytes]:
    """AWS's answer to a call the caller's policies do not allow (an implicit deny)."""
    message = (
        f"User: {principal} is not authorized to perform: {action} on resource: {resource} "
        f"because no identity-based policy allows the {action} action"
    )
    request_id = str(uuid.uuid4())
    if call.protocol == "json":
        body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
        return 400, {
            "Content-Type": "application/x-amz-json-1.1",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": "AccessDeniedException",
        }, body
    code = {"ec2": "UnauthorizedOperation"}.get(call.service, "AccessDenied")
    if call.service == "ec2":
        xml = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>You are not authorized to perform "
            f"this operation. {escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
    else:
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    return 403, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, xml.encode()


class _Handler(BaseHTTPRequestHandler):
    gate: HostGate
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        gate = self.gate
        try:
            call = parse(self.headers, self.path, body)
        except ValueError:
            call = None
        if call is None:
            # A host's CLI always signs; an unsigned request is AWS's MissingAuthenticationToken.
            gate.record_denial(f"unsigned request {self.command} {self.path}")
            body = json.dumps({"__type": "MissingAuthenticationTokenException",
                               "message": "Missing Authentication Token"}).encode()
            self._answer(403, {"Content-Type": "application/x-amz-json-1.1",
                               "x-amzn-ErrorType": "MissingAuthenticationTokenException"}, body)
            return
        principal = gate.principal(call.access_key)
        try:
            refused = gate.decide(call)
        except (AssertionError, KeyError) as exc:
            # No mapping (or a parameter the mapping needs is absent): refuse, naming why, so a
            # new host call gets its mapping before it can pass.
            refused = (f"{call.service}:{call.operation}", f"(unmapped: {exc})")
        if refused is not None:
            action, resource = refused
            session = principal.rsplit("/", 1)[-1]
            gate.record_denial(f"host {session}: {action} on {resource}")
            self._answer(*denial(call, principal, action, resource))
            return
        with gate._lock:
            gate.allowed.append(f"host {principal.rsplit('/', 1)[-1]}: {call.service}:{call.operation}")
        conn = http.client.HTTPConnection(*gate.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            # send_response writes its own Server and Date; Content-Length is set from the body
            skip = _HOP | {"content-length", "server", "date"}
            relayed = {k: v for k, v in resp.getheaders() if k.lower() not in skip}
            self._answer(resp.status, relayed, payload)
        finally:
            conn.close()

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _relay


def secret_arns(secretsmanager: Any) -> Callable[[Call], dict[str, Any]]:
    """A `resolve` for the gate: a secret fetched by name or partial ARN is authorized by AWS as
    the secret's full ARN (with its random suffix), so the check is made on that ARN."""

    def resolve(call: Call) -> dict[str, Any]:
        secret = str(call.params.get("SecretId", ""))
        if call.service != "secretsmanager" or not secret:
            return call.params
        try:
            found = secretsmanager.describe_secret(SecretId=secret)
        except secretsmanager.exceptions.ResourceNotFoundException:
            return call.params  # checked by name; moto then answers that it does not exist
        return {**call.params, "SecretId": found["ARN"]}

    return resolve


# The AWS-managed keys: their key policies admit the account's principals through the service,
# so reading with them needs no kms grant in the caller's policies.
_MANAGED_KEYS = {"ssm": "alias/aws/ssm", "secretsmanager": "alias/aws/secretsmanager"}


def _parameter_name(name: str) -> str:
    """A parameter's name from what a caller passed: a name or ARN, with or without a selector."""
    if name.startswith("arn:"):
        rest = name.split(":", 5)[5].removeprefix("parameter/")
        name = "/" + rest if "/" in rest.split(":", 1)[0] else rest
    return name.split(":", 1)[0]


def customer_key_reads(ssm: Any, secretsmanager: Any, kms: Any) -> Callable[[Call], list[tuple[str, str]]]:
    """An `implied` for the gate: decrypting a SecureString parameter (GetParameter(s) with
    WithDecryption) or reading a secret encrypted with a customer-managed key makes the service
    call kms:Decrypt with the caller's permissions, so the caller needs it on that key."""

    def key_arn(key: str | None, service: str) -> str | None:
        if not key or key == _MANAGED_KEYS[service]:
            return None
        return str(kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"])

    def implied(call: Call) -> list[tuple[str, str]]:
        keys: list[str | None] = []
        if call.service == "ssm" and call.operation in {"GetParameter", "GetParameters"}:
            if not call.params.get("WithDecryption"):
                return []
            names = call.params.get("Names") or [call.params.get("Name", "")]
            for name in names:
                found = ssm.describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Values": [_parameter_name(str(name))]}]
                )["Parameters"]
                keys += [key_arn(p.get("KeyId"), "ssm") for p in found if p.get("Type") == "SecureString"]
        elif call.service == "secretsmanager" and call.operation == "GetSecretValue":
            try:
                found = secretsmanager.describe_secret(SecretId=call.params.get("SecretId", ""))
            except secretsmanager.exceptions.ResourceNotFoundException:
                return []
            keys.append(key_arn(found.get("KmsKeyId"), "secretsmanager"))
        return [("kms:Decrypt", key) for key in keys if key]

    return implied
