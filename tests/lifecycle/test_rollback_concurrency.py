"""Rollback releases (operator or automatic) swap at the rollback concurrency, deploys at theirs."""

from __future__ import annotations

import pytest
from deployer.entry.events import handle_operation

from tests.lifecycle.conftest import World, client, load_event

pytestmark = pytest.mark.unit


def _max_concurrency(command_id: str | None) -> str:
    assert command_id, "the release sent no swap command"
    return str(client("ssm").list_commands(CommandId=command_id)["Commands"][0]["MaxConcurrency"])


def test_an_operator_rollback_swaps_every_host_at_once_while_deploys_keep_their_pace(world: World) -> None:
    # Given two releases deployed at the app's own pace
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"))
    deploy_pace = world.config.rollout.max_concurrency
    assert deploy_pace != "100%"
    # When an operator rolls back
    answer = handle_operation(world.ld, load_event("rollback.json"))
    # Then the rollback's command goes at the rollback concurrency (100% by default)
    assert world.config.rollout.rollback_max_concurrency == "100%"
    assert _max_concurrency(world.release(answer["release"]).command_id) == "100%"
    assert _max_concurrency(world.release(2).command_id) == deploy_pace


def test_an_automatic_rollback_swaps_at_the_rollback_concurrency(world: World) -> None:
    # Given release 1 live and release 2 deploying at the app's own pace
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    assert _max_concurrency(second.command_id) == world.config.rollout.max_concurrency
    # When release 2 fails on one host and is rolled back automatically
    answer = world.complete(second, failures={world.instances[0]: "health"})
    # Then the rollback release's command goes at the rollback concurrency
    assert _max_concurrency(world.release(answer["rollback_release"]).command_id) == "100%"
