"""A rollback swaps at its own MaxConcurrency (every host already ran the image)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig

from tests.conftest import REGION, SWAP_PARAMETERS, WEB_CONFIG

pytestmark = pytest.mark.unit


def sent_concurrency(command_id: str) -> str:
    ssm = boto3.client("ssm", region_name=REGION)
    return str(ssm.list_commands(CommandId=command_id)["Commands"][0]["MaxConcurrency"])


def test_a_rollback_swap_goes_to_every_host_at_once_by_default(deps: Any, fleet: Any) -> None:
    # Given an app that rolls deploys out 25% at a time and says nothing about rollbacks
    config = AppConfig.parse({**WEB_CONFIG, "launch_template": fleet.template_id,
                              "rollout": {"max_concurrency": "25%"}})
    # When a deploy and then a rollback are sent to the group
    deploy = deps.fleet.send_swap(config, SWAP_PARAMETERS, "deploy", hosts=2)
    rollback = deps.fleet.send_swap(config, SWAP_PARAMETERS, "rollback", hosts=2, rollback=True)
    # Then the deploy keeps its 25% and the rollback goes at 100%
    assert sent_concurrency(deploy) == "25%"
    assert sent_concurrency(rollback) == "100%"


def test_a_configured_rollback_concurrency_is_used_for_rollbacks_only(deps: Any, fleet: Any) -> None:
    # Given an app whose rollbacks are limited to two hosts at a time
    config = AppConfig.parse({**WEB_CONFIG, "launch_template": fleet.template_id,
                              "rollout": {"max_concurrency": "1", "rollback_max_concurrency": "2"}})
    # When a rollback and a deploy are sent
    rollback = deps.fleet.send_swap(config, SWAP_PARAMETERS, "rollback", hosts=2, rollback=True)
    deploy = deps.fleet.send_swap(config, SWAP_PARAMETERS, "deploy", hosts=2)
    # Then each uses its own setting
    assert sent_concurrency(rollback) == "2"
    assert sent_concurrency(deploy) == "1"


def test_a_malformed_rollback_concurrency_is_refused_naming_the_field() -> None:
    # Given a config whose rollback concurrency is not a number or a percentage
    data = {**WEB_CONFIG, "rollout": {"rollback_max_concurrency": "all"}}
    # When it is parsed
    with pytest.raises(InvalidAppConfig) as err:
        AppConfig.parse(data)
    # Then the error names the field
    assert "rollback_max_concurrency" in str(err.value)
