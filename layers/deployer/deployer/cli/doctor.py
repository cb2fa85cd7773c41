"""`deployer doctor`: read-only checks of an account before (and after) the first deploy. Each
check is one line, `ok`, `warn` or `fail`, with what to do; `--json` gives the same as
`{"ok": bool, "checks": [{"check", "status", "detail", "fix"}]}`. Exit 1 when any check fails.

Checks: the stack and its outputs; the account's Lambda concurrency against the stack's
`ReservedConcurrency`; per app, its group and launch template, its repository, that the group's
instances are SSM-managed and that their role allows what the stack's HostPolicy grants (with
AmazonSSMManagedInstanceCore attached); the documents' default versions; the stack's EventBridge
rules enabled. Nothing is written.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from deployer.adapters import error_code
from deployer.cli.context import EXIT_FAILED, EXIT_OK, Context
from deployer.cli.stack import OUTPUT_ENV, describe_stack, outputs_of, stack_name
from deployer.errors import DeployerError

if TYPE_CHECKING:
    from deployer.models.config import AppConfig

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

OK, WARN, FAIL = "ok", "warn", "fail"
# Lambda keeps 100 of the account's concurrency unreserved; the stack reserves 33 when on.
RESERVED = 33
UNRESERVED_MINIMUM = 100
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
REQUIRED_OUTPUTS = (*OUTPUT_ENV, "HostPolicyArn")


@dataclass(frozen=True)
class Check:
    check: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.check}: {self.detail}" + (f"; {self.fix}" if self.fix else "")


def _failed(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
    return str(exc)


class Doctor:
    """The facts the checks read, each read once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.clients = ctx.deps.clients
        self.stack = stack_name(ctx.args, ctx.env)
        self.described: dict[str, Any] = {}
        self.outputs: dict[str, str] = {}

    def client(self, service: str) -> Any:
        return self.clients.client(service)

    def parameter(self, name: str, default: str) -> str:
        for p in self.described.get("Parameters", []):
            if p.get("ParameterKey") == name:
                return str(p.get("ResolvedValue") or p.get("ParameterValue") or default)
        return default

    # ------------------------------------------------------------------ checks
    def check_stack(self) -> Check:
        self.described = describe_stack(self.client("cloudformation"), self.stack)
        self.outputs = outputs_of(self.described)
        status = str(self.described.get("StackStatus", ""))
        missing = [o for o in REQUIRED_OUTPUTS if not self.outputs.get(o)]
        if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
            return Check(
                "stack", FAIL, f"{self.stack} is {status}", "fix the failed deploy (sam deploy) first"
            )
        if missing:
            return Check(
                "stack",
                FAIL,
                f"{self.stack} lacks outputs {', '.join(missing)}",
                "deploy build/template.yaml of this version (make deploy)",
            )
        return Check("stack", OK, f"{self.stack} {status}, {len(self.outputs)} outputs")

    def check_concurrency(self) -> Check:
        limit = self.client("lambda").get_account_settings()["AccountLimit"]
        quota = int(limit.get("ConcurrentExecutions", 0))
        on = self.parameter("ReservedConcurrency", "on") == "on"
        needed = RESERVED + UNRESERVED_MINIMUM
        unreserved = limit.get("UnreservedConcurrentExecutions")
        detail = f"quota {quota}, unreserved {unreserved}, ReservedConcurrency={'on' if on else 'off'}"
        if on and quota < needed:
            return Check(
                "concurrency",
                FAIL,
                detail,
                f"below {needed}: redeploy with ReservedConcurrency=off, or raise the quota (Service Quotas)",
            )
        if not on and quota >= needed:
            return Check(
                "concurrency", WARN, detail, "the quota allows ReservedConcurrency=on (README, Deploy to AWS)"
            )
        return Check("concurrency", OK, detail)

    def check_documents(self) -> Iterator[Check]:
        for output in ("SwapDocumentName", "DiagnoseDocumentName"):
            name = self.outputs.get(output)
            if not name:
                continue
            doc = self.client("ssm").describe_document(Name=name)["Document"]
            default, latest = str(doc.get("DefaultVersion")), str(doc.get("LatestVersion"))
            if default != latest:
                yield Check(
                    f"document {name}",
                    WARN,
                    f"default version {default}, latest {latest}",
                    f"aws ssm update-document-default-version --name {name} --document-version {latest}",
                )
            else:
                yield Check(f"document {name}", OK, f"default version {default} is the latest")

    def check_rules(self) -> Check:
        cloudformation, events = self.client("cloudformation"), self.client("events")
        names: list[str] = []
        kwargs: dict[str, Any] = {"StackName": self.stack}
        while True:
            page = cloudformation.list_stack_resources(**kwargs)
            names += [
                str(r["PhysicalResourceId"])
                for r in page.get("StackResourceSummaries", [])
                if r.get("ResourceType") == "AWS::Events::Rule" and r.get("PhysicalResourceId")
            ]
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        disabled = [n for n in names if events.describe_rule(Name=n.split("|")[-1]).get("State") != "ENABLED"]
        if not names:
            return Check(
                "event rules", FAIL, "the stack has no EventBridge rule", "deploy build/template.yaml"
            )
        if disabled:
            return Check(
                "event rules",
                FAIL,
                f"disabled: {', '.join(disabled)}",
                "pushes and SSM events are not delivered: aws events enable-rule --name <rule>",
            )
        return Check("event rules", OK, f"{len(names)} rules enabled")

    def check_app(self, config: AppConfig) -> Iterator[Check]:
        app = f"app {config.app}"
        try:
            group = self.ctx.deps.launch_templates.current(config)
        except DeployerError as exc:
            yield Check(
                f"{app} group", FAIL, str(exc), "fix auto_scaling_group / launch_template (deployer app put)"
            )
            return
        yield Check(
            f"{app} group",
            OK,
            f"{group.group} on launch template {group.template_id} version {group.version}",
        )
        yield self._repository(app, config)
        instances = self._instances(config.auto_scaling_group)
        yield self._managed(app, instances)
        yield self._host_role(app, group.template_id, group.version)

    def _repository(self, app: str, config: AppConfig) -> Check:
        if config.registry_login != "ecr" and config.registry:
            return Check(
                f"{app} repository", OK, f"{config.registry}/{config.repository} (not ECR: not checked)"
            )
        try:
            self.client("ecr").describe_repositories(repositoryNames=[config.repository])
        except ClientError as exc:
            if error_code(exc) == "RepositoryNotFoundException":
                return Check(
                    f"{app} repository",
                    FAIL,
                    f"ECR repository {config.repository} does not exist",
                    "create it, or fix repository in the app config",
                )
            raise
        return Check(f"{app} repository", OK, f"ECR repository {config.repository}")

    def _instances(self, group: str) -> list[str]:
        answer = self.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        groups = answer.get("AutoScalingGroups", [])
        return sorted(i["InstanceId"] for g in groups for i in g.get("Instances", []))

    def _managed(self, app: str, instances: list[str]) -> Check:
        if not instances:
            return Check(
                f"{app} instances",
                WARN,
                "the group has no instance",
                "a deploy reaches no host until it scales out",
            )
        online: set[str] = set()
        for start in range(0, len(instances), 50):
            chunk = instances[start : start + 50]
            answer = self.client("ssm").describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": chunk}], MaxResults=50
            )
            online |= {
                i["InstanceId"]
                for i in answer.get("InstanceInformationList", [])
                if i.get("PingStatus") == "Online"
            }
        missing = [i for i in instances if i not in online]
        if missing:
            return Check(
                f"{app} instances",
                FAIL,
                f"not SSM-managed: {', '.join(missing)}",
                "run the SSM agent, give the instance role AmazonSSMManagedInstanceCore, and a route to SSM",
            )
        return Check(f"{app} instances", OK, f"{len(instances)} SSM-managed (Online)")

    def _host_role(self, app: str, template_id: str, version: int) -> Check:
        ec2, iam = self.client("ec2"), self.client("iam")
        data = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[str(version)])
        profile = (
            data["LaunchTemplateVersions"][0].get("LaunchTemplateData", {}).get("IamInstanceProfile") or {}
        )
        name = profile.get("Name") or str(profile.get("Arn", "")).rsplit("/", 1)[-1]
        if not name:
            return Check(
                f"{app} host role",
                FAIL,
                "the launch template names no instance profile",
                "give it an instance profile whose role has the stack's HostPolicy",
            )
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"].get("Roles", [])
        if not roles:
            return Check(
                f"{app} host role",
                FAIL,
                f"instance profile {name} has no role",
                "add a role named <HostRolePrefix>* with HostPolicy and AmazonSSMManagedInstanceCore",
            )
        role = str(roles[0]["RoleName"])
        statements, attached = self._role_statements(iam, role)
        required = list(self._required())
        denied = [f"{a} on {r}" for a, r in required if not _allows(statements, a, r)]
        problems = []
        if SSM_CORE not in attached and not _allows(statements, "ssmmessages:CreateControlChannel", "*"):
            problems.append("AmazonSSMManagedInstanceCore is not attached")
        if denied:
            problems.append("it lacks " + ", ".join(denied))
        prefix = self.parameter("HostRolePrefix", "deployer-host")
        if not role.startswith(prefix):
            problems.append(
                f"its name does not start with HostRolePrefix {prefix} (the functions cannot pass it)"
            )
        if problems:
            return Check(
                f"{app} host role",
                FAIL,
                f"role {role}: " + "; ".join(problems),
                f"attach the stack's HostPolicy ({self.outputs.get('HostPolicyArn', 'HostPolicyArn')}) "
                "and AmazonSSMManagedInstanceCore to it",
            )
        return Check(f"{app} host role", OK, f"role {role} allows all {len(required)} host actions")

    def _required(self) -> Iterator[tuple[str, str]]:
        """(action, resource) pairs of the stack's HostPolicy, as deployed."""
        iam = self.client("iam")
        arn = self.outputs["HostPolicyArn"]
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        document = _document(
            iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        )
        for statement in _as_list(document.get("Statement")):
            if statement.get("Effect") != "Allow":
                continue
            for action in _as_list(statement.get("Action")):
                for resource in _as_list(statement.get("Resource")):
                    yield str(action), str(resource)

    @staticmethod
    def _role_statements(iam: Any, role: str) -> tuple[list[dict[str, Any]], set[str]]:
        statements: list[dict[str, Any]] = []
        attached = {
            str(p["PolicyArn"])
            for p in iam.list_attached_role_policies(RoleName=role).get("AttachedPolicies", [])
        }
        for arn in attached:
            version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
            document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
            statements += _as_list(_document(document).get("Statement"))
        for name in iam.list_role_policies(RoleName=role).get("PolicyNames", []):
            document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            statements += _as_list(_document(document).get("Statement"))
        return statements, attached


def _document(value: Any) -> dict[str, Any]:
    """IAM answers a policy document URL-encoded (or decoded by the SDK)."""
    if isinstance(value, dict):
        return value
    return dict(json.loads(urllib.parse.unquote(str(value))))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _allows(statements: Iterable[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether an Allow statement names the action and a resource pattern covering `resource`
    (a required "*" must be granted as "*"). Conditions and denies are not evaluated."""
    return any(
        s.get("Effect") == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), str(a).lower()) for a in _as_list(s.get("Action")))
        and any(str(r) == "*" or fnmatch.fnmatchcase(resource, str(r)) for r in _as_list(s.get("Resource")))
        for s in statements
    )


def run_checks(ctx: Context) -> list[Check]:
    doctor = Doctor(ctx)
    checks: list[Check] = []

    def attempt(name: str, step: Callable[[], Check | Iterable[Check]]) -> bool:
        try:
            result = step()
        except (ClientError, BotoCoreError, DeployerError) as exc:
            checks.append(
                Check(name, FAIL, f"could not check: {_failed(exc)}", "check your credentials' read access")
            )
            return False
        checks.extend([result] if isinstance(result, Check) else list(result))
        return True

    if not attempt("stack", doctor.check_stack) or checks[-1].status == FAIL:
        return checks
    attempt("concurrency", doctor.check_concurrency)
    attempt("apps", lambda: [c for config in ctx.deps.apps.list() for c in doctor.check_app(config)])
    attempt("documents", lambda: list(doctor.check_documents()))
    attempt("event rules", doctor.check_rules)
    return checks


def _doctor(ctx: Context) -> int:
    checks = run_checks(ctx)
    failed = any(c.status == FAIL for c in checks)
    if ctx.json:
        ctx.emit_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        for check in checks:
            ctx.out.write(check.line() + "\n")
    return EXIT_FAILED if failed else EXIT_OK


def register(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    doctor = sub.add_parser(
        "doctor", help="read-only checks of the account, stack, apps and hosts", parents=[common]
    )
    doctor.set_defaults(run=_doctor)
