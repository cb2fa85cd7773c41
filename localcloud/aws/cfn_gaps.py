"""moto CloudFormation gaps: what moto's `create_stack` skips or ignores, created after it.

moto 5 creates most of the stack but logs "No Moto CloudFormation support" for some resource
types and drops some properties. `fill` creates them through the regular AWS APIs, after
`create_stack` reports CREATE_COMPLETE, with the properties resolved by moto's own CloudFormation
(`Ref`, `Fn::GetAtt`, `Fn::Sub` against the resources the stack created):

| skipped by moto | created with |
|---|---|
| `AWS::Lambda::EventInvokeConfig` | `lambda:PutFunctionEventInvokeConfig` (retries, age, destination) |
| `AWS::SQS::QueuePolicy` | `sqs:SetQueueAttributes` (`Policy`) |
| `AWS::CloudWatch::Alarm` | `cloudwatch:PutMetricAlarm` (name `<stack>-<LogicalId>-local`) |

| property moto ignores | applied with |
|---|---|
| `AWS::DynamoDB::Table` `TimeToLiveSpecification` | `dynamodb:UpdateTimeToLive` |
| `AWS::DynamoDB::Table` `PointInTimeRecoverySpecification` | `dynamodb:UpdateContinuousBackups` |
| `AWS::IAM::Role` `ManagedPolicyArns` | `iam:AttachRolePolicy` (each function role holds its policies) |

Any other type moto skips is an error (`UnfilledGap`), so a new resource type in the template
cannot silently go missing from the local stack. moto announces each type it skips, once per
resource and pass (about 40 lines per stack); `quiet_filled_types` silences those announcements
for the types above only, so a type nobody fills is still announced. Development tooling only.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from typing import Any

# Types moto's CloudFormation creates nothing for, but which are no AWS resource to create
# either (conditions of the stack's own) -- none today.
SKIPPED_BY_DESIGN: frozenset[str] = frozenset()


class UnfilledGap(RuntimeError):
    """moto skipped a resource type this gap-filler does not know how to create."""


class _FilledTypesFilter(logging.Filter):
    """Drops moto's "No Moto CloudFormation support for <type>" for the types `fill` creates."""

    def filter(self, record: logging.LogRecord) -> bool:
        skipped = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (record.msg == "No Moto CloudFormation support for %s" and skipped in _CREATORS)


def quiet_filled_types() -> None:
    """Silence moto's announcements of a skipped type (a line on the "moto" logger per resource
    and pass, a UserWarning per type) for the types `fill` creates, in this process and so in a
    moto server it runs. Any other message, and any other skipped type, still shows."""
    moto_logger = logging.getLogger("moto")
    if not any(isinstance(f, _FilledTypesFilter) for f in moto_logger.filters):
        moto_logger.addFilter(_FilledTypesFilter())
    types = "|".join(re.escape(t) for t in sorted(_CREATORS))
    warnings.filterwarnings(
        "ignore",
        message=f"Tried to parse ({types}) but it's not supported by moto's CloudFormation",
        category=UserWarning,
        module=r"moto\.cloudformation\.",
    )


def _moto_stack(account: str, region: str, name: str) -> Any:
    from moto.cloudformation.models import cloudformation_backends  # noqa: PLC0415

    backend = cloudformation_backends[account][region]
    for stack in backend.stacks.values():
        if stack.name == name and stack.status != "DELETE_COMPLETE":
            return stack
    raise UnfilledGap(f"no stack {name} in moto's CloudFormation")


def _resolve(stack: Any, value: Any) -> Any:
    """Resolve intrinsic functions the way moto's CloudFormation resolved the rest of the stack."""
    from moto.cloudformation.parsing import clean_json  # noqa: PLC0415

    return clean_json(value, stack.resource_map)


def _active(stack: Any, resource: dict[str, Any]) -> bool:
    condition = resource.get("Condition")
    return condition is None or bool(stack.resource_map.lazy_condition_map[condition])


def fill(clients: Any, name: str, template: dict[str, Any], account: str | None = None) -> list[str]:
    """Create what moto skipped for stack `name` (deployed from `template`, already transformed);
    returns one line per gap filled."""
    import os  # noqa: PLC0415

    account = account or os.environ.get("MOTO_ACCOUNT_ID", "123456789012")
    stack = _moto_stack(account, clients.region, name)
    pages = clients.client("cloudformation").get_paginator("list_stack_resources").paginate(StackName=name)
    created = {
        s["LogicalResourceId"]: s.get("PhysicalResourceId", "")
        for page in pages
        for s in page["StackResourceSummaries"]
    }
    filled: list[str] = []
    for lid, resource in (template.get("Resources") or {}).items():
        rtype = resource["Type"]
        if not _active(stack, resource):
            continue
        props = _resolve(stack, resource.get("Properties") or {})
        if rtype == "AWS::DynamoDB::Table" and lid in created:
            filled.extend(_table_properties(clients, lid, created[lid], props))
            continue
        if rtype == "AWS::IAM::Role" and lid in created:
            filled.extend(_role_managed_policies(clients, lid, created[lid], props))
            continue
        if lid in created:
            continue
        handler = _CREATORS.get(rtype)
        if handler is None:
            if rtype in SKIPPED_BY_DESIGN:
                continue
            raise UnfilledGap(
                f"moto's CloudFormation skipped {lid} ({rtype}) and localcloud.aws.cfn_gaps cannot create it"
            )
        filled.append(f"{lid} ({rtype}): " + handler(clients, name, lid, props))
    return filled


def _role_managed_policies(clients: Any, lid: str, role: str, props: dict[str, Any]) -> list[str]:
    """Attach the role's ManagedPolicyArns (moto creates the role without them)."""
    iam = clients.client("iam")
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]}
    out = []
    for arn in props.get("ManagedPolicyArns") or []:
        if arn in attached:
            continue
        try:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)
        except iam.exceptions.NoSuchEntityException:
            if arn.startswith("arn:aws:iam::aws:policy/"):
                continue  # a moto without AWS's managed policies (the local cloud loads them)
            raise
        out.append(f"{lid} (AWS::IAM::Role): ManagedPolicyArns {arn.rsplit('/', 1)[-1]}")
    return out


def _table_properties(clients: Any, lid: str, table: str, props: dict[str, Any]) -> list[str]:
    ddb = clients.client("dynamodb")
    out = []
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        status = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"]
        if status != "ENABLED":
            ddb.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
            out.append(f"{lid} (AWS::DynamoDB::Table): TimeToLiveSpecification on {ttl['AttributeName']}")
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        ddb.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
        out.append(f"{lid} (AWS::DynamoDB::Table): PointInTimeRecoverySpecification")
    return out


def _event_invoke_config(clients: Any, stack: str, lid: str, props: dict[str, Any]) -> str:
    args: dict[str, Any] = {
        "FunctionName": props["FunctionName"],
        "Qualifier": props.get("Qualifier", "$LATEST"),
    }
    for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
        if key in props:
            args[key] = int(props[key])
    if props.get("DestinationConfig"):
        args["DestinationConfig"] = props["DestinationConfig"]
    clients.client("lambda").put_function_event_invoke_config(**args)
    retries = args.get("MaximumRetryAttempts")
    return f"put_function_event_invoke_config {args['FunctionName']} retries {retries}"


def _queue_policy(clients: Any, stack: str, lid: str, props: dict[str, Any]) -> str:
    sqs = clients.client("sqs")
    policy = props["PolicyDocument"]
    text = policy if isinstance(policy, str) else json.dumps(policy)
    for url in props.get("Queues") or []:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": text})
    return f"set_queue_attributes Policy on {len(props.get('Queues') or [])} queue(s)"


def _alarm(clients: Any, stack: str, lid: str, props: dict[str, Any]) -> str:
    name = props.get("AlarmName") or f"{stack}-{lid}-local"
    args: dict[str, Any] = {"AlarmName": name}
    for key in (
        "AlarmDescription", "ActionsEnabled", "AlarmActions", "OKActions", "InsufficientDataActions",
        "MetricName", "Namespace", "Statistic", "ExtendedStatistic", "Dimensions", "Period", "Unit",
        "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
        "TreatMissingData", "EvaluateLowSampleCountPercentile", "Metrics", "ThresholdMetricId",
    ):
        if key in props:
            args[key] = props[key]
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in args:
            args[key] = int(args[key])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    clients.client("cloudwatch").put_metric_alarm(**args)
    return f"put_metric_alarm {name}"


_CREATORS = {
    "AWS::Lambda::EventInvokeConfig": _event_invoke_config,
    "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::CloudWatch::Alarm": _alarm,
}
