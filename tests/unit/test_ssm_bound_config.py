"""Config fields SendCommand receives are validated with SSM's own patterns (botocore's model)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from deployer import cli
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig

from tests.conftest import REGION, WEB_CONFIG

pytestmark = pytest.mark.unit

VALID = {**WEB_CONFIG, "launch_template": "lt-0123456789abcdef0"}
# field -> SendCommand member it becomes
SSM_BOUND = {
    "max_errors": "MaxErrors",
    "max_concurrency": "MaxConcurrency",
    "rollback_max_concurrency": "MaxConcurrency",
}
CANDIDATES = [
    "0",
    "00",
    "01",
    "1",
    "9",
    "10",
    "50",
    "1234567",
    "12345678",
    "0%",
    "00%",
    "5%",
    "05%",
    "9%",
    "10%",
    "99%",
    "100%",
    "101%",
    "1000%",
    "-1",
    "1.5",
    "1 ",
    " 1",
    "1\n",
    "",
    "%",
    "all",
    "1e3",
]


def ssm_shape(member: str) -> dict[str, Any]:
    """The SendCommand member's shape as botocore's SSM model declares it."""
    model = botocore.session.get_session().get_service_model("ssm")
    shape = model.operation_model("SendCommand").input_shape.members[member]
    return dict(shape.metadata)


def ssm_accepts(member: str, value: str) -> bool:
    shape = ssm_shape(member)
    return shape["min"] <= len(value) <= shape["max"] and re.fullmatch(shape["pattern"], value) is not None


def config_accepts(field: str, value: str) -> bool:
    try:
        AppConfig.parse({**VALID, "rollout": {**VALID["rollout"], field: value}})
    except InvalidAppConfig:
        return False
    return True


@pytest.mark.parametrize("field", sorted(SSM_BOUND))
def test_the_config_accepts_exactly_what_ssms_model_accepts(field: str) -> None:
    # Given SSM's pattern for the member this field becomes, and a spread of candidate values
    member = SSM_BOUND[field]
    # When each candidate is validated by the config model
    disagreements = [v for v in CANDIDATES if config_accepts(field, v) != ssm_accepts(member, v)]
    # Then the config and SSM never disagree
    assert disagreements == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_errors", "00"),
        ("max_errors", "01"),
        ("max_errors", "05%"),
        ("max_concurrency", "05%"),
        ("max_concurrency", "0"),
        ("rollback_max_concurrency", "0%"),
    ],
)
def test_a_value_ssm_rejects_is_refused_naming_the_field(field: str, value: str) -> None:
    assert not ssm_accepts(SSM_BOUND[field], value)
    with pytest.raises(InvalidAppConfig) as err:
        AppConfig.parse({**VALID, "rollout": {**VALID["rollout"], field: value}})
    assert f"rollout.{field}" in str(err.value)
    assert SSM_BOUND[field] in str(err.value)


def test_cli_put_of_a_max_errors_ssm_rejects_writes_nothing(deps: Any, tmp_path: Path) -> None:
    # Given a stored app, and a new version of its config with max_errors "05%"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(VALID))
    assert cli.main(["app", "put", "--file", str(good)], deps=deps, out=io.StringIO()) == 0
    before = boto3.client("dynamodb", region_name=REGION).scan(TableName="AppsTable")["Items"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**VALID, "rollout": {**VALID["rollout"], "max_errors": "05%"}}))
    err = io.StringIO()

    # When it is put
    code = cli.main(["app", "put", "--file", str(bad)], deps=deps, out=io.StringIO(), err=err)

    # Then the command fails as a configuration error naming the field; the stored config is unchanged
    assert code == 4
    assert "rollout.max_errors" in err.getvalue()
    assert boto3.client("dynamodb", region_name=REGION).scan(TableName="AppsTable")["Items"] == before
