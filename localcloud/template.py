"""Read template.yaml the way CloudFormation + SAM would, for the local cloud.

Loads the CloudFormation short-form tags, evaluates conditions and the intrinsic functions
the local cloud needs (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, `Fn::Select`, `Fn::Split`,
`Fn::If`, `Fn::Equals`/`Not`/`And`/`Or`, `Fn::FindInMap`), and exposes what the stand-ins act
on: functions with their merged environment, event rules with their patterns and targets,
tables, the SSM documents, lifecycle hooks. Physical names are deterministic
(`<stack>-<LogicalId>` where CloudFormation would generate one).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT = "123456789012"
REGION = "us-east-1"


class TemplateError(ValueError):
    """template.yaml says something the local cloud cannot honour."""


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_yaml(text: str) -> dict[str, Any]:
    data = yaml.load(text, Loader=_CfnLoader)
    if not isinstance(data, dict):
        raise TemplateError("template is not a mapping")
    return data


@dataclass
class Rule:
    """One EventBridge rule: a pattern or a schedule, and the functions it targets."""

    logical_id: str
    pattern: dict[str, Any] | None
    schedule: str | None
    targets: list[str]  # function logical ids
    enabled: bool = True
    input: Any = None


@dataclass
class Function:
    logical_id: str
    name: str
    code_uri: str
    handler: str
    environment: dict[str, str]
    timeout: int
    memory: int
    properties: dict[str, Any] = field(default_factory=dict)


class Template:
    """A parsed template with its resources' local physical names."""

    def __init__(
        self,
        path: str | Path,
        stack: str = "deployer",
        parameters: dict[str, str] | None = None,
        region: str = REGION,
        account: str = ACCOUNT,
    ) -> None:
        self.path = Path(path)
        self.root = self.path.parent
        self.data = load_yaml(self.path.read_text())
        self.stack = stack
        self.region = region
        self.account = account
        self.resources: dict[str, dict[str, Any]] = self.data.get("Resources") or {}
        self.globals: dict[str, Any] = self.data.get("Globals") or {}
        self.parameters = self._parameter_values(parameters or {})
        # Physical ids and attributes of resources, filled by the cloud as it creates them;
        # deterministic defaults come first so every reference resolves.
        self.physical: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.conditions: dict[str, bool] = {}
        for name in self.data.get("Conditions") or {}:
            self._condition(name)
        for lid, res in self.resources.items():
            self._default_names(lid, res)

    # -- parameters and conditions -------------------------------------------------------
    def _parameter_values(self, given: dict[str, str]) -> dict[str, Any]:
        declared = self.data.get("Parameters") or {}
        unknown = set(given) - set(declared)
        if unknown:
            raise TemplateError(f"unknown stack parameter(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in given:
                values[name] = given[name]
            elif "Default" in spec:
                values[name] = spec["Default"]
            else:
                raise TemplateError(f"stack parameter {name} has no default; pass a value")
            is_list = (
                str(spec.get("Type", "")).startswith("List<") or spec.get("Type") == "CommaDelimitedList"
            )
            if is_list and isinstance(values[name], str):
                values[name] = [v for v in values[name].split(",") if v]
        return values

    def _condition(self, name: str) -> bool:
        if name not in self.conditions:
            spec = (self.data.get("Conditions") or {}).get(name)
            if spec is None:
                raise TemplateError(f"unknown condition {name}")
            self.conditions[name] = bool(self.resolve(spec))
        return self.conditions[name]

    def active(self, lid: str) -> bool:
        cond = self.resources[lid].get("Condition")
        return True if cond is None else self._condition(cond)

    # -- names ---------------------------------------------------------------------------
    def _default_names(self, lid: str, res: dict[str, Any]) -> None:
        t = res.get("Type", "")
        props = res.get("Properties") or {}
        arn = f"arn:aws:{{svc}}:{self.region}:{self.account}:"
        gen = f"{self.stack}-{lid}"
        attrs: dict[str, str] = {}
        if t in {"AWS::Serverless::Function", "AWS::Lambda::Function"}:
            name = self._literal(props.get("FunctionName"), gen)
            phys = name
            attrs["Arn"] = arn.format(svc="lambda") + f"function:{name}"
        elif t == "AWS::DynamoDB::Table":
            name = self._literal(props.get("TableName"), gen)
            phys = name
            attrs["Arn"] = arn.format(svc="dynamodb") + f"table/{name}"
            attrs["StreamArn"] = attrs["Arn"] + "/stream/local"
        elif t == "AWS::SNS::Topic":
            name = self._literal(props.get("TopicName"), gen)
            phys = arn.format(svc="sns") + name
            attrs["TopicName"] = name
            attrs["TopicArn"] = phys
        elif t == "AWS::SQS::Queue":
            name = self._literal(props.get("QueueName"), gen)
            phys = f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
            attrs["Arn"] = arn.format(svc="sqs") + name
            attrs["QueueName"] = name
            attrs["QueueUrl"] = phys
        elif t in {"AWS::SSM::Document", "AWS::SSM::Parameter"}:
            phys = self._literal(props.get("Name"), gen)
        elif t == "AWS::Events::Rule":
            phys = self._literal(props.get("Name"), gen)
            attrs["Arn"] = arn.format(svc="events") + f"rule/{phys}"
        elif t == "AWS::Logs::LogGroup":
            phys = self._literal(props.get("LogGroupName"), f"/aws/{gen}")
            attrs["Arn"] = arn.format(svc="logs") + f"log-group:{phys}:*"
        elif t == "AWS::IAM::Role":
            phys = self._literal(props.get("RoleName"), gen)
            attrs["Arn"] = f"arn:aws:iam::{self.account}:role/{phys}"
        elif t in {"AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"}:
            phys = arn.format(svc="lambda") + f"layer:{gen}:1"
        elif t == "AWS::CloudWatch::Alarm":
            phys = self._literal(props.get("AlarmName"), gen)
            attrs["Arn"] = arn.format(svc="cloudwatch") + f"alarm:{phys}"
        else:
            phys = gen
            attrs["Arn"] = arn.format(svc="local") + gen
        self.physical[lid] = phys
        self.attributes[lid] = attrs

    def _literal(self, value: Any, default: str) -> str:
        if value is None:
            return default
        if isinstance(value, str):
            return value
        # a name built from parameters (e.g. !Sub "${AWS::StackName}-x") resolves lazily
        try:
            return str(self.resolve(value))
        except TemplateError:
            return default

    def set_physical(self, lid: str, phys: str, **attrs: str) -> None:
        self.physical[lid] = phys
        self.attributes.setdefault(lid, {}).update(attrs)

    # -- intrinsic functions -------------------------------------------------------------
    def _pseudo(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{self.stack}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        raise TemplateError(f"unknown pseudo parameter {name}")

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self._pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]
        raise TemplateError(f"!Ref {name}: no such parameter or resource")

    def getatt(self, lid: str, attr: str) -> Any:
        if lid not in self.resources:
            raise TemplateError(f"!GetAtt {lid}.{attr}: no such resource")
        attrs = self.attributes.get(lid, {})
        if attr not in attrs:
            raise TemplateError(f"!GetAtt {lid}.{attr}: attribute not known to the local cloud")
        return attrs[attr]

    def resolve(self, value: Any) -> Any:
        """Evaluate intrinsic functions inside `value`."""
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return _NO_VALUE
                return self.ref(arg)
            if key == "Condition":
                return self._condition(arg)
            if key.startswith("Fn::"):
                return self._fn(key, arg)
        out_d = {}
        for k, v in value.items():
            r = self.resolve(v)
            if r is not _NO_VALUE:
                out_d[k] = r
        return out_d

    def _fn(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.getatt(str(self.resolve(parts[0])), str(self.resolve(parts[1])))
        if key == "Fn::Sub":
            if isinstance(arg, list):
                text, extra = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
            else:
                text, extra = arg, {}
            return self._sub(text, extra)
        if key == "Fn::Join":
            sep, items = arg
            return str(sep).join(str(i) for i in self.resolve(items))
        if key == "Fn::Select":
            idx, items = arg
            return self.resolve(items)[int(self.resolve(idx))]
        if key == "Fn::Split":
            sep, text = arg
            return str(self.resolve(text)).split(sep)
        if key == "Fn::If":
            cond, yes, no = arg
            return self.resolve(yes if self._condition(cond) else no)
        if key == "Fn::Equals":
            a, b = (self.resolve(x) for x in arg)
            return str(a) == str(b)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        if key == "Fn::FindInMap":
            m, k1, k2 = (self.resolve(x) for x in arg)
            return self.data["Mappings"][m][k1][k2]
        if key == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if key == "Fn::ToJsonString":
            return json.dumps(self.resolve(arg))
        raise TemplateError(f"intrinsic function {key} is not supported by the local cloud")

    def _sub(self, text: str, extra: dict[str, Any]) -> str:
        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return str(extra[name])
            if "." in name and not name.startswith("AWS::"):
                lid, attr = name.split(".", 1)
                return str(self.getatt(lid, attr))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", repl, text)

    # -- views the stand-ins use ---------------------------------------------------------
    def of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {
            lid: res for lid, res in self.resources.items() if res.get("Type") in types and self.active(lid)
        }

    def properties(self, lid: str) -> dict[str, Any]:
        return dict(self.resolve(self.resources[lid].get("Properties") or {}))

    def functions(self) -> dict[str, Function]:
        gfn = self.globals.get("Function") or {}
        out: dict[str, Function] = {}
        for lid, res in self.of_type("AWS::Serverless::Function").items():
            raw = res.get("Properties") or {}
            env: dict[str, Any] = {}
            env.update(((gfn.get("Environment") or {}).get("Variables")) or {})
            env.update(((raw.get("Environment") or {}).get("Variables")) or {})
            resolved = {k: self.resolve(v) for k, v in env.items()}
            environment = {k: _env_str(v) for k, v in resolved.items() if v is not _NO_VALUE}
            out[lid] = Function(
                logical_id=lid,
                name=self.physical[lid],
                code_uri=str(self.resolve(raw.get("CodeUri", gfn.get("CodeUri", ".")))),
                handler=str(self.resolve(raw.get("Handler", gfn.get("Handler", "app.handler")))),
                environment=environment,
                timeout=int(self.resolve(raw.get("Timeout", gfn.get("Timeout", 3)))),
                memory=int(self.resolve(raw.get("MemorySize", gfn.get("MemorySize", 128)))),
                properties=raw,
            )
        return out

    def function_for_arn(self, arn: str) -> str | None:
        for lid, attrs in self.attributes.items():
            if attrs.get("Arn") == arn and self.resources[lid].get("Type") in {
                "AWS::Serverless::Function",
                "AWS::Lambda::Function",
            }:
                return lid
        return None

    def rules(self) -> list[Rule]:
        """Every EventBridge rule: SAM function events and AWS::Events::Rule resources."""
        rules: list[Rule] = []
        for lid, res in self.of_type("AWS::Serverless::Function").items():
            events = (res.get("Properties") or {}).get("Events") or {}
            for ename, ev in events.items():
                etype = ev.get("Type")
                props = self.resolve(ev.get("Properties") or {})
                enabled = _enabled(props)
                if etype in {"EventBridgeRule", "CloudWatchEvent"}:
                    rules.append(
                        Rule(f"{lid}.{ename}", props.get("Pattern"), None, [lid], enabled, props.get("Input"))
                    )
                elif etype in {"Schedule", "ScheduleV2"}:
                    rules.append(
                        Rule(
                            f"{lid}.{ename}",
                            None,
                            props.get("Schedule") or props.get("ScheduleExpression"),
                            [lid],
                            enabled,
                            props.get("Input"),
                        )
                    )
        for lid in self.of_type("AWS::Events::Rule"):
            props = self.properties(lid)
            targets = []
            for t in props.get("Targets") or []:
                fn = self.function_for_arn(str(t.get("Arn")))
                if fn:
                    targets.append(fn)
            pattern = props.get("EventPattern")
            if isinstance(pattern, str):
                pattern = json.loads(pattern)
            rules.append(
                Rule(
                    lid,
                    pattern,
                    props.get("ScheduleExpression"),
                    targets,
                    props.get("State", "ENABLED") == "ENABLED",
                )
            )
        return rules

    def sqs_sources(self) -> list[tuple[str, str, int]]:
        """(function logical id, queue logical id, batch size) of each SQS event source."""
        out = []
        for lid, res in self.of_type("AWS::Serverless::Function").items():
            for ev in ((res.get("Properties") or {}).get("Events") or {}).values():
                if ev.get("Type") != "SQS":
                    continue
                props = ev.get("Properties") or {}
                queue = props.get("Queue")
                if isinstance(queue, dict) and "Fn::GetAtt" in queue:
                    target = queue["Fn::GetAtt"]
                    qlid = target[0] if isinstance(target, list) else str(target).split(".")[0]
                else:
                    qlid = next(
                        (q for q, a in self.attributes.items() if a.get("Arn") == self.resolve(queue)), ""
                    )
                if qlid not in self.resources:
                    raise TemplateError(
                        f"{lid}: SQS event source queue {queue!r} is not a resource of the stack"
                    )
                out.append((lid, qlid, int(self.resolve(props.get("BatchSize", 10)))))
        # explicit mappings (a function whose role reads only its own queue)
        for lid, res in self.of_type("AWS::Lambda::EventSourceMapping").items():
            props = res.get("Properties") or {}
            function, source = props.get("FunctionName"), props.get("EventSourceArn")
            if not (isinstance(function, dict) and "Ref" in function
                    and isinstance(source, dict) and "Fn::GetAtt" in source):
                raise TemplateError(f"{lid}: a mapping needs FunctionName !Ref and EventSourceArn !GetAtt")
            target = source["Fn::GetAtt"]
            qlid = target[0] if isinstance(target, list) else str(target).split(".")[0]
            if self.resources.get(qlid, {}).get("Type") != "AWS::SQS::Queue":
                continue  # not a queue (streams are not modelled)
            out.append((function["Ref"], qlid, int(self.resolve(props.get("BatchSize", 10)))))
        return out

    def tables(self) -> dict[str, dict[str, Any]]:
        """create_table arguments per table logical id."""
        out = {}
        for lid in self.of_type("AWS::DynamoDB::Table"):
            p = self.properties(lid)
            args: dict[str, Any] = {
                "TableName": self.physical[lid],
                "KeySchema": p["KeySchema"],
                "AttributeDefinitions": p["AttributeDefinitions"],
                "BillingMode": p.get("BillingMode", "PROVISIONED"),
            }
            if args["BillingMode"] != "PAY_PER_REQUEST":
                args["ProvisionedThroughput"] = p.get(
                    "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
                )
            for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
                if key in p:
                    args[key] = p[key]
            if "TimeToLiveSpecification" in p:
                args["_ttl"] = p["TimeToLiveSpecification"]
            out[lid] = args
        return out

    def documents(self) -> dict[str, dict[str, Any]]:
        """SSM documents: name, type, format and content (a dict)."""
        out = {}
        for lid in self.of_type("AWS::SSM::Document"):
            p = self.properties(lid)
            content = p.get("Content")
            if isinstance(content, str):
                content = json.loads(content) if content.lstrip().startswith("{") else load_yaml(content)
            out[lid] = {
                "Name": self.physical[lid],
                "DocumentType": p.get("DocumentType", "Command"),
                "Content": content,
            }
        return out


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE: Any = _NoValue()


def _enabled(props: dict[str, Any]) -> bool:
    if "Enabled" in props:
        return bool(props["Enabled"])
    return props.get("State", "ENABLED") == "ENABLED"


def _env_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)
