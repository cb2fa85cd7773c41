"""Deploy the deployable template to the local cloud the way `sam deploy` and CloudFormation do.

1. **package** (what `sam package` does): each local `CodeUri`/`ContentUri` becomes a zip in an
   artifacts bucket (`s3://localcloud-artifacts/<path>.zip`); the template points at it;
2. **transform**: the SAM transform of aws-sam-translator, the library SAM itself uses, with the
   stack's parameter values and a static map of the AWS-managed policies the template names;
3. **create_stack** on moto's CloudFormation (the template uploaded to the bucket and passed by
   `TemplateURL`, as `sam deploy` does for templates over 51,200 bytes), then the resource types
   moto's CloudFormation skips are created by `localcloud.aws.cfn_gaps`.

`Stack` is what the stand-ins act on, read back through the AWS APIs, never from the template:
the outputs, the physical ids CloudFormation generated, each function's configuration
(`GetFunctionConfiguration`: handler, timeout, memory, environment; its code is the package
whose `CodeSha256` it reports), its asynchronous retries (`GetFunctionEventInvokeConfig`), the
EventBridge rules and targets (`ListRules`/`ListTargetsByRule`), the SQS event source mappings
and the SSM documents' content (`GetDocument`).
Development tooling only: no Lambda code imports it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from deployer.cli import stack as cli_stack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_BUCKET = "localcloud-artifacts"
FUNCTION_TYPE = "AWS::Lambda::Function"

# The AWS-managed policies a SAM template may name by their short name (SAM looks them up with
# iam:ListPolicies at transform time). The template names none today; SAM adds the two below by
# ARN itself (basic execution, X-Ray).
MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}

# The CLI's environment from the stack's outputs (the CLI's own mapping), plus the rollback
# function the playground's actions go through.
OUTPUT_ENV = {**cli_stack.OUTPUT_ENV, "RollbackFunctionName": "DEPLOYER_ROLLBACK_FUNCTION"}


class StackError(RuntimeError):
    """The stack could not be created (CloudFormation's status and reason in the message)."""


# ------------------------------------------------------------------------------ template text
class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags as their long form."""


def _tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_yaml(text: str) -> dict[str, Any]:
    """A CloudFormation template's YAML, intrinsics in their long form ({"Fn::Sub": ...})."""
    data = yaml.load(text, Loader=_CfnLoader)  # _CfnLoader is a SafeLoader
    if not isinstance(data, dict):
        raise StackError("template is not a mapping")
    return data


# ------------------------------------------------------------------------------ package
def _zip(directory: Path) -> bytes:
    """A stand-in deployment package: one file naming the code's folder. The Lambda stand-in runs
    the folder itself; the name makes each package (and so its CodeSha256) unique."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("localcloud-code.json", date_time=(2020, 1, 1, 0, 0, 0))
        zf.writestr(info, json.dumps({"path": str(directory)}))
    return buf.getvalue()


def code_sha256(package: bytes) -> str:
    """Lambda's CodeSha256: base64 of the package's SHA-256."""
    return base64.b64encode(hashlib.sha256(package).digest()).decode()


@dataclass
class Packaged:
    template: dict[str, Any]
    packages: dict[str, bytes]  # S3 key -> zip
    code: dict[str, Path]  # CodeSha256 -> folder

    def upload(self, s3: Any, bucket: str = ARTIFACTS_BUCKET) -> None:
        for key, body in self.packages.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)


def package(template: dict[str, Any], base: Path, bucket: str = ARTIFACTS_BUCKET) -> Packaged:
    """`sam package`: local CodeUri/ContentUri → s3://bucket/<path relative to the repo>.zip."""
    out = copy.deepcopy(template)
    packages: dict[str, bytes] = {}
    code: dict[str, Path] = {}
    for resource in (out.get("Resources") or {}).values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            value = props.get(key)
            if not isinstance(value, str) or value.startswith("s3://"):
                continue
            folder = (base / value).resolve()
            try:
                name = folder.relative_to(ROOT).as_posix()
            except ValueError:
                name = folder.as_posix().strip("/")
            s3_key = f"{name or 'root'}.zip"
            body = _zip(folder)
            packages[s3_key] = body
            code[code_sha256(body)] = folder
            props[key] = f"s3://{bucket}/{s3_key}"
    return Packaged(out, packages, code)


# ------------------------------------------------------------------------------ transform
class StaticManagedPolicies:
    """SAM's managed-policy loader without IAM: the names SAM may look up, from a static map."""

    def load(self) -> dict[str, str]:
        return dict(MANAGED_POLICIES)


@contextlib.contextmanager
def _region(region: str) -> Iterator[None]:
    """The SAM translator reads the region (AWS::Region, partition) from a boto3 session."""
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


def sam_transform(template: dict[str, Any], parameters: dict[str, str], region: str) -> dict[str, Any]:
    """The template as CloudFormation sees it after `Transform: AWS::Serverless-2016-10-31`."""
    from samtranslator.translator.transform import transform  # noqa: PLC0415 - heavy import

    with _region(region):
        return dict(transform(copy.deepcopy(template), dict(parameters), StaticManagedPolicies()))


# ------------------------------------------------------------------------------ the stack
@dataclass
class Function:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: int
    memory: int
    retries: int = 2  # asynchronous invocations (EventInvokeConfig MaximumRetryAttempts)


@dataclass
class Rule:
    """One EventBridge rule as the events API reports it."""

    name: str
    arn: str
    pattern: str | None  # the EventPattern JSON text
    schedule: str | None
    targets: list[str]  # function logical ids
    enabled: bool = True
    input: Any = None


@dataclass
class SqsMapping:
    function: str  # logical id
    queue_url: str
    queue_arn: str
    batch_size: int


@dataclass
class Stack:
    name: str
    region: str
    status: str
    outputs: dict[str, str]
    parameters: dict[str, str]
    physical: dict[str, str]  # logical id -> physical id
    types: dict[str, str]  # logical id -> resource type
    functions: dict[str, Function] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    sqs_mappings: list[SqsMapping] = field(default_factory=list)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> content
    gap_filled: list[str] = field(default_factory=list)

    def of_type(self, resource_type: str) -> dict[str, str]:
        return {lid: self.physical[lid] for lid, t in self.types.items() if t == resource_type}

    def cli_env(self) -> dict[str, str]:
        """The CLI's variables from the outputs (README, "Deploy to AWS")."""
        return {env: self.outputs[out] for out, env in OUTPUT_ENV.items() if out in self.outputs}


def _paged(method: Any, key: str, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    token_names = ("NextToken", "Marker")
    while True:
        page = method(**kwargs)
        items.extend(page.get(key, []))
        nxt = next(((n, page[n]) for n in (*token_names, "NextMarker") if page.get(n)), None)
        if nxt is None:
            return items
        kwargs["NextToken" if nxt[0] == "NextToken" else "Marker"] = nxt[1]


def read_stack(clients: Any, name: str, code: dict[str, Path]) -> Stack:
    """What the stack created, through the AWS APIs (`clients.client(service)`)."""
    cfn = clients.client("cloudformation")
    described = cfn.describe_stacks(StackName=name)["Stacks"][0]
    # moto lists a blank summary for each resource it skipped (localcloud.aws.cfn_gaps creates those)
    summaries = [
        s
        for s in _paged(cfn.list_stack_resources, "StackResourceSummaries", StackName=name)
        if s.get("LogicalResourceId")
    ]
    stack = Stack(
        name=name,
        region=clients.region,
        status=described["StackStatus"],
        outputs={o["OutputKey"]: str(o["OutputValue"]) for o in described.get("Outputs", [])},
        parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])},
        physical={s["LogicalResourceId"]: s.get("PhysicalResourceId", "") for s in summaries},
        types={s["LogicalResourceId"]: s["ResourceType"] for s in summaries},
    )
    lam = clients.client("lambda")
    by_arn: dict[str, str] = {}
    for lid, physical in stack.of_type(FUNCTION_TYPE).items():
        config = lam.get_function_configuration(FunctionName=physical)
        sha = config.get("CodeSha256", "")
        if sha not in code:
            raise StackError(f"{lid}: its code (CodeSha256 {sha}) is not a package of this deploy")
        try:
            retries = int(lam.get_function_event_invoke_config(FunctionName=physical)["MaximumRetryAttempts"])
        except (lam.exceptions.ResourceNotFoundException, KeyError):
            retries = 2  # Lambda's default for asynchronous invocations
        variables = (config.get("Environment") or {}).get("Variables") or {}
        stack.functions[lid] = Function(
            logical_id=lid,
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            code_dir=code[sha],
            handler=config["Handler"],
            environment={k: str(v) for k, v in variables.items()},
            timeout=int(config.get("Timeout", 3)),
            memory=int(config.get("MemorySize", 128)),
            retries=retries,
        )
        by_arn[config["FunctionArn"]] = lid
    events = clients.client("events")
    for rule in _paged(events.list_rules, "Rules"):
        if rule["Name"] not in stack.of_type("AWS::Events::Rule").values():
            continue  # not a rule of this stack
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        inputs = [json.loads(t["Input"]) for t in targets if t.get("Input")]
        stack.rules.append(
            Rule(
                name=rule["Name"],
                arn=rule["Arn"],
                pattern=rule.get("EventPattern"),
                schedule=rule.get("ScheduleExpression"),
                targets=[by_arn[t["Arn"]] for t in targets if t["Arn"] in by_arn],
                enabled=rule.get("State", "ENABLED") == "ENABLED",
                input=inputs[0] if inputs else None,
            )
        )
    sqs = clients.client("sqs")
    for mapping in _paged(lam.list_event_source_mappings, "EventSourceMappings"):
        fn = by_arn.get(mapping.get("FunctionArn", ""))
        source = mapping.get("EventSourceArn", "")
        if fn is None or not source.startswith("arn:aws:sqs:"):
            continue
        url = sqs.get_queue_url(QueueName=source.rsplit(":", 1)[1])["QueueUrl"]
        stack.sqs_mappings.append(SqsMapping(fn, url, source, int(mapping.get("BatchSize", 10))))
    ssm = clients.client("ssm")
    for physical in stack.of_type("AWS::SSM::Document").values():
        doc = ssm.get_document(Name=physical)
        text = doc["Content"]
        is_json = doc.get("DocumentFormat") == "JSON"
        stack.documents[physical] = json.loads(text) if is_json else load_yaml(text)
    return stack


def deploy(
    clients: Any,
    template_path: Path,
    name: str = "deployer",
    parameters: dict[str, str] | None = None,
    *,
    timeout: float = 60.0,
) -> Stack:
    """package → SAM transform → create_stack → fill moto's CloudFormation gaps → read back."""
    from localcloud.aws import cfn_gaps  # noqa: PLC0415

    parameters = dict(parameters or {})
    packaged = package(load_yaml(template_path.read_text()), template_path.parent)
    cfn_gaps.quiet_filled_types()  # moto would announce every resource of a type it fills
    s3 = clients.client("s3")
    s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
    packaged.upload(s3)
    transformed = sam_transform(packaged.template, parameters, clients.region)
    key = f"{name}/template.json"
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=key, Body=json.dumps(transformed).encode())
    cfn = clients.client("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateURL=f"https://{ARTIFACTS_BUCKET}.s3.amazonaws.com/{key}",
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + timeout
    while True:
        described = cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = described["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise StackError(f"stack {name} still {status} after {timeout:.0f}s")
        time.sleep(0.2)
    if status != "CREATE_COMPLETE":
        raise StackError(f"stack {name}: {status} {described.get('StackStatusReason', '')}".strip())
    filled = cfn_gaps.fill(clients, name, transformed)
    stack = read_stack(clients, name, packaged.code)
    stack.gap_filled = filled
    return stack
