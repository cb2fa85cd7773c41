"""Permission checks: every AWS call a function makes is checked against that function's role
as the deployable template defines it, and fails as AWS would fail it when the role does not
allow it. moto does not enforce IAM, so without this a missing grant is invisible locally.

The evaluation: each call is mapped to the IAM action(s) and resource ARN(s) AWS authorizes it as
(`requirements`, plus `implied` for what AWS checks as the caller besides, e.g. the topic key on
a publish), and allowed when an Allow statement names the action and a resource pattern that
covers it (`allowed`). Explicit denies are not evaluated, nor conditions of the functions'
grants (the template has none that their own calls depend on); the hosts' calls are checked with
their condition keys (`condition_context`: the meter's PutMetricData namespace); a call with
no mapping fails the check, so a new call gets a mapping before it can pass.

Used by the fault suite and the lifecycle harness (`Enforcer`, around every handler run) and by
tests/iam (the coverage test). Resource names: `names` maps a logical id to its physical name
(the tests name every resource after its logical id).
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

PARTITION = "aws"


# ------------------------------------------------------------------ template → statements
def substitutions(
    template: dict[str, Any],
    region: str,
    account: str,
    stack: str = "deployer",
    names: dict[str, str] | None = None,
) -> dict[str, str]:
    """What each `Ref`, `GetAtt` and `${...}` of the template resolves to; a resource's physical
    name is its logical id unless `names` says otherwise."""
    subs = {
        "AWS::Partition": PARTITION,
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::StackName": stack,
    }
    for name, parameter in template.get("Parameters", {}).items():
        subs[name] = str(parameter.get("Default", name))
    for name, resource in template["Resources"].items():
        physical = (names or {}).get(name, name)
        subs[name] = physical
        kind = resource["Type"]
        if kind == "AWS::DynamoDB::Table":
            subs[f"{name}.Arn"] = f"arn:{PARTITION}:dynamodb:{region}:{account}:table/{physical}"
        if kind == "AWS::SQS::Queue":
            subs[f"{name}.Arn"] = f"arn:{PARTITION}:sqs:{region}:{account}:{physical}"
        if kind == "AWS::SNS::Topic":
            subs[name] = f"arn:{PARTITION}:sns:{region}:{account}:{physical}"
        if kind == "AWS::KMS::Key":
            subs[f"{name}.Arn"] = arn("kms", f"key/{physical}", region, account)
        if kind == "AWS::Logs::LogGroup":
            subs[f"{name}.Arn"] = arn("logs", f"log-group:{physical}:*", region, account)
    return subs


def resolve(value: Any, subs: dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return subs[value["Ref"]]
    if "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return subs[".".join(target) if isinstance(target, list) else str(target)]
    if "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", lambda m: subs[m.group(1)], value["Fn::Sub"])
    raise AssertionError(f"cannot resolve {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def document_statements(documents: list[dict[str, Any]], subs: dict[str, str]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for document in documents:
        for statement in document["Statement"]:
            statements.append(
                {
                    "Effect": statement["Effect"],
                    "Action": as_list(statement["Action"]),
                    "Resource": [resolve(r, subs) for r in as_list(statement["Resource"])],
                    **({"Condition": statement["Condition"]} if "Condition" in statement else {}),
                }
            )
    return statements


def function_documents(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    resources = template["Resources"]
    documents = []
    for policy in resources[function]["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Ref" in policy:
            documents.append(resources[policy["Ref"]]["Properties"]["PolicyDocument"])
        elif isinstance(policy, dict) and "Statement" in policy:
            documents.append(policy)
        else:
            raise AssertionError(f"{function}: policy {policy!r} is not a statement list or in-stack policy")
    return documents


# ------------------------------------------------------------------ call → action, ARNs
def arn(service: str, resource: str, region: str, account: str) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def required(
    service: str, operation: str, params: dict[str, Any], region: str, account: str
) -> tuple[str, list[str]]:
    """The IAM action and resource ARNs one call needs."""
    action = f"{service}:{operation}"

    def a(svc: str, resource: str) -> str:
        return arn(svc, resource, region, account)

    if operation.startswith(("Describe", "List")) and service in {"ec2", "autoscaling", "ssm"}:
        return action, ["*"]
    if service == "dynamodb":
        table = a("dynamodb", f"table/{params['TableName']}")
        return action, [f"{table}/index/{params['IndexName']}" if "IndexName" in params else table]
    # The hosts' reads (localcloud.aws.host_gate). IAM authorizes a parameter's ARN: a `:version`
    # or `:label` selector is not part of it, and the name may be given as the ARN itself.
    if service == "ssm" and operation in {"GetParameter", "GetParameters"}:
        names = params["Names"] if operation == "GetParameters" else [params["Name"]]
        return action, [_parameter_arn(n, region, account) for n in names]
    # A secret's ARN ends in a random 6-character suffix; a call by name is covered by what
    # covers every suffix of that name (operators grant `secret:NAME-??????`).
    if service == "secretsmanager" and operation == "GetSecretValue":
        secret = params["SecretId"]
        named = a("secretsmanager", f"secret:{secret}-??????")
        return action, [secret if secret.startswith("arn:") else named]
    if service == "ecr" and operation == "GetAuthorizationToken":
        return action, ["*"]  # no resource type in the service authorization reference
    if service == "ecr" and operation in {
        "BatchGetImage",
        "GetDownloadUrlForLayer",
        "BatchCheckLayerAvailability",
    }:
        return action, [a("ecr", f"repository/{params['repositoryName']}")]
    if service == "ssm" and operation in {
        "GetParameter",
        "PutParameter",
        "DeleteParameter",
        "GetParameterHistory",
    }:
        return action, [a("ssm", f"parameter/{params['Name'].lstrip('/')}")]
    if service == "ssm" and operation == "SendCommand":
        instances = [a("ec2", f"instance/{i}") for i in params.get("InstanceIds", [])] or [
            a("ec2", "instance/*")
        ]
        return action, [a("ssm", f"document/{params['DocumentName']}"), *instances]
    if service == "secretsmanager" and operation == "DescribeSecret":
        # By name, IAM sees the full ARN, which ends with `-` and six characters AWS chose.
        secret = params["SecretId"]
        return action, [
            secret if secret.startswith("arn:") else a("secretsmanager", f"secret:{secret}-XXXXXX")
        ]
    if service == "ssm" and operation == "GetDocument":
        return action, [a("ssm", f"document/{params['Name']}")]
    if service == "ec2" and operation in {"CreateLaunchTemplateVersion", "DeleteLaunchTemplateVersions"}:
        return action, [a("ec2", f"launch-template/{params['LaunchTemplateId']}")]
    if service == "ssm" and operation in {"GetCommandInvocation", "CancelCommand"}:
        # Neither has a resource type in the IAM service authorization reference.
        return action, ["*"]
    if service == "ecr" and operation == "DescribeImages":
        return action, [a("ecr", f"repository/{params['repositoryName']}")]
    if service == "sns" and operation == "Publish":
        return action, [params["TopicArn"]]
    if service == "sqs" and operation == "SendMessage":
        return action, [a("sqs", params["QueueUrl"].rsplit("/", 1)[-1])]
    if service == "autoscaling" and operation in {
        "UpdateAutoScalingGroup",
        "CompleteLifecycleAction",
        "RecordLifecycleActionHeartbeat",
    }:
        name = params["AutoScalingGroupName"]
        uuid = "00000000-0000-0000-0000-000000000000"
        return action, [a("autoscaling", f"autoScalingGroup:{uuid}:autoScalingGroupName/{name}")]
    if service in {"cloudwatch", "monitoring"} and operation == "GetMetricData":
        # botocore names CloudWatch's endpoint `monitoring`; IAM's prefix is `cloudwatch`.
        # No resource type in the service authorization reference.
        return "cloudwatch:GetMetricData", ["*"]
    # CloudWatch signs as "monitoring" and IAM names it "cloudwatch"; PutMetricData has no
    # resource type (the hosts' meter: `aws cloudwatch put-metric-data`).
    if service in {"monitoring", "cloudwatch"} and operation == "PutMetricData":
        return "cloudwatch:PutMetricData", ["*"]
    if service == "monitoring" and operation == "DescribeAlarms":
        # CloudWatch's IAM prefix is `cloudwatch` (its endpoint's is `monitoring`). Composite
        # alarms are returned only to a permission scoped to "*" (DescribeAlarms API reference);
        # metric alarms alone are authorized per alarm ARN.
        action = "cloudwatch:DescribeAlarms"
        if "CompositeAlarm" in params.get("AlarmTypes", []) or not params.get("AlarmNames"):
            return action, ["*"]
        return action, [a("cloudwatch", f"alarm:{name}") for name in params["AlarmNames"]]
    if service == "logs" and operation == "DescribeLogGroups":
        return action, ["*"]
    if service == "logs" and operation == "CreateLogGroup":
        return action, [a("logs", f"log-group:{params['logGroupName']}:*")]
    if service == "logs" and operation in {"DescribeLogStreams", "CreateLogStream", "PutLogEvents"}:
        stream = params.get("logStreamName")
        group = a("logs", f"log-group:{params['logGroupName']}")
        return action, [f"{group}:log-stream:{stream}" if stream else f"{group}:*"]
    raise AssertionError(f"no resource mapping for {action}: add one to localcloud/aws/permissions.py")


def _parameter_arn(name: str, region: str, account: str) -> str:
    """The ARN IAM checks for a parameter named by name or ARN, with or without a selector."""
    if name.startswith("arn:"):
        parts = name.split(":")
        return ":".join(parts[:6])
    return arn("ssm", f"parameter/{name.split(':', 1)[0].lstrip('/')}", region, account)


# The item actions of a TransactWriteItems request and the IAM action each is authorized as
# (DynamoDB developer guide, "Using IAM with DynamoDB transactions").
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def requirements(
    service: str, operation: str, params: dict[str, Any], region: str, account: str
) -> list[tuple[str, str]]:
    """Every (IAM action, resource ARN) one call needs."""
    if service == "dynamodb" and operation == "TransactWriteItems":
        needed = []
        for item in params["TransactItems"]:
            for kind, request in item.items():
                table = arn("dynamodb", f"table/{request['TableName']}", region, account)
                needed.append((f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table))
        return needed
    action, resources = required(service, operation, params, region, account)
    return [(action, resource) for resource in resources]


def implied(
    template: dict[str, Any], subs: dict[str, str], service: str, operation: str, params: dict[str, Any]
) -> list[tuple[str, str]]:
    """What AWS also authorises as the caller of one call: publishing to a topic encrypted with
    a customer-managed key makes SNS generate and decrypt a data key with the caller's
    permissions (moto does not model this, so the template says which key)."""
    if service != "sns" or operation != "Publish":
        return []
    topic = template["Resources"].get(params["TopicArn"].rsplit(":", 1)[-1], {})
    key = topic.get("Properties", {}).get("KmsMasterKeyId")
    if key is None:
        return []
    if isinstance(key, str):
        # alias/aws/sns: the AWS-managed key's own policy admits the account's principals
        assert key.startswith("alias/aws/"), f"topic key {key!r} is neither managed nor in the stack"
        return []
    resolved = resolve(key, subs)
    return [("kms:GenerateDataKey", resolved), ("kms:Decrypt", resolved)]


def condition_context(service: str, operation: str, params: dict[str, Any]) -> dict[str, str]:
    """The condition keys AWS sets for one call, for the calls whose grants are conditioned on
    them (the hosts' PutMetricData is granted in one namespace only)."""
    if service in {"monitoring", "cloudwatch"} and operation == "PutMetricData":
        return {"cloudwatch:namespace": str(params.get("Namespace", ""))}
    return {}


def conditions_hold(condition: dict[str, Any], context: dict[str, str]) -> bool:
    """StringEquals and StringLike, keys case-insensitive; a key the call does not set fails
    its condition, as in IAM. Any other operator is refused rather than guessed."""
    keys = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        if operator not in {"StringEquals", "StringLike"}:
            raise AssertionError(f"condition operator {operator} is not evaluated here")
        for key, wanted in tests.items():
            value = keys.get(key.lower())
            if value is None:
                return False
            if operator == "StringEquals" and value not in as_list(wanted):
                return False
            if operator == "StringLike" and not any(fnmatch.fnmatchcase(value, w) for w in as_list(wanted)):
                return False
    return True


def allowed(
    statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    """Whether an Allow statement covers (action, resource). With `context` (the call's condition
    keys, `condition_context`) a statement's Condition must hold; without it, conditions are not
    evaluated (the functions' grants)."""
    return any(
        s["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in s["Action"])
        and any(r == "*" or fnmatch.fnmatchcase(resource, r) for r in s["Resource"])
        and (context is None or "Condition" not in s or conditions_hold(s["Condition"], context))
        for s in statements
    )


# ------------------------------------------------------------------ enforcement
# The error each service answers a call its caller may not make.
_DENIED_CODES = {
    "ec2": "UnauthorizedOperation",
    "autoscaling": "AccessDenied",
    "sns": "AuthorizationError",
    "sqs": "AccessDenied",
}


def logical_id(function: str) -> str:
    """functions/<name> → its logical id (on_image_push → OnImagePushFunction)."""
    return "".join(part.title() for part in function.split("_")) + "Function"


class RoleCheck:
    """One role's statements, and the check of one call against them (raises as AWS would).
    `topic_keys` maps a topic ARN to its key's ARN (publishing uses the key as the caller)."""

    def __init__(
        self,
        role: str,
        statements: list[dict[str, Any]],
        region: str,
        account: str,
        topic_keys: dict[str, str] | None = None,
    ) -> None:
        self.role = role
        self.statements = statements
        self.region = region
        self.account = account
        self.topic_keys = topic_keys or {}

    def missing(self, service: str, operation: str, params: dict[str, Any]) -> list[str]:
        needed = requirements(service, operation, params, self.region, self.account)
        if service == "sns" and operation == "Publish" and params.get("TopicArn") in self.topic_keys:
            key = self.topic_keys[params["TopicArn"]]
            needed += [("kms:GenerateDataKey", key), ("kms:Decrypt", key)]
        return [f"{a} on {r}" for a, r in needed if not allowed(self.statements, a, r)]

    def check(self, service: str, operation: str, params: dict[str, Any]) -> None:
        missing = self.missing(service, operation, params)
        if missing:
            code = _DENIED_CODES.get(service, "AccessDeniedException")
            message = f"role of {self.role} is not authorized to perform: {'; '.join(missing)}"
            raise ClientError(
                {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                operation,
            )


def service_of(client: BaseClient) -> str:
    model = client.meta.service_model
    return str(model.signing_name or model.endpoint_prefix)


def normalised(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """IAM statements with Action and Resource as lists (Allow and Deny kept as they are)."""
    return [
        {
            "Effect": s.get("Effect", "Allow"),
            "Action": as_list(s.get("Action", [])),
            "Resource": as_list(s.get("Resource", [])),
            **({"Condition": s["Condition"]} if "Condition" in s else {}),
        }
        for s in statements
    ]


def role_statements(iam: Any, role: str) -> list[dict[str, Any]]:
    """Every statement of a role as IAM holds it: attached managed policies and inline ones."""
    import ast  # noqa: PLC0415
    import json  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    def document(value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        text = urllib.parse.unquote(str(value))
        try:
            return dict(json.loads(text))
        except ValueError:
            # moto's CloudFormation stores an inline role policy as the Python text of its dict
            return dict(ast.literal_eval(text))

    statements: list[dict[str, Any]] = []
    for attached in iam.list_attached_role_policies(RoleName=role).get("AttachedPolicies", []):
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(
            PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )
        statements += as_list(document(version["PolicyVersion"]["Document"])["Statement"])
    for name in iam.list_role_policies(RoleName=role).get("PolicyNames", []):
        inline = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        statements += as_list(document(inline)["Statement"])
    return normalised(statements)


class Enforcer:
    """While `acting_as(function)` is active in a thread, every botocore call is checked against
    that function's role (from the template) and refused as AWS refuses it; outside, calls pass
    (the harness's own)."""

    def __init__(
        self, template: dict[str, Any], region: str, account: str, names: dict[str, str] | None = None
    ) -> None:
        self.template = template
        self.region = region
        self.account = account
        self.subs = substitutions(template, region, account, names=names)
        self._local = threading.local()
        self.denied: list[str] = []
        self.checked = 0
        self.topic_keys: dict[str, str] = {}
        for name, resource in template["Resources"].items():
            key = (
                resource.get("Properties", {}).get("KmsMasterKeyId")
                if resource["Type"] == "AWS::SNS::Topic"
                else None
            )
            if key is not None and not isinstance(key, str):
                self.topic_keys[self.subs[name]] = resolve(key, self.subs)

    def role(self, function: str) -> RoleCheck:
        statements = document_statements(function_documents(self.template, function), self.subs)
        return RoleCheck(function, statements, self.region, self.account, self.topic_keys)

    @contextlib.contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        stack: list[RoleCheck] = self._local.__dict__.setdefault("stack", [])
        stack.append(self.role(function))
        try:
            yield
        finally:
            stack.pop()

    def check(self, client: BaseClient, operation: str, params: dict[str, Any]) -> None:
        stack = self._local.__dict__.get("stack") or []
        if not stack:
            return
        role = stack[-1]
        self.checked += 1
        try:
            role.check(service_of(client), operation, params)
        except ClientError as exc:
            self.denied.append(f"{role.role}: {exc.response['Error']['Message']}")
            raise


_ACTIVE: list[Enforcer] = []
_original: Callable[..., Any] | None = None


def _make_api_call(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
    for enforcer in _ACTIVE:
        enforcer.check(self, operation_name, api_params)
    assert _original is not None
    return _original(self, operation_name, api_params)


def install(enforcer: Enforcer) -> Enforcer:
    """Check every botocore client's calls with `enforcer` (wraps whatever `_make_api_call` is
    there, e.g. the fault injector's, so both apply)."""
    global _original  # noqa: PLW0603 - one wrapper per process
    if _original is None:
        _original = BaseClient._make_api_call
        BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]
    _ACTIVE[:] = [enforcer]
    return enforcer


def uninstall() -> None:
    """Put botocore's `_make_api_call` back (tests that install an enforcer for one test)."""
    global _original  # noqa: PLW0603 - one wrapper per process
    if _original is not None:
        BaseClient._make_api_call = _original  # type: ignore[method-assign]
        _original = None
    _ACTIVE.clear()
