"""SendCommand's TimeoutSeconds is one delivery deadline for the whole command: it must cover
every wave rate control makes, or later waves expire as Delivery Timed Out."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from deployer import builders
from deployer.models.config import AppConfig

from tests.conftest import GROUP, REGION, SWAP_PARAMETERS, WEB_CONFIG, create_fleet

pytestmark = pytest.mark.unit


def _config(template_id: str, **rollout: Any) -> AppConfig:
    return AppConfig.parse({**WEB_CONFIG, "launch_template": template_id, "rollout": rollout})


def _sent(aws_calls: Any) -> dict[str, Any]:
    sent = [c.params for c in aws_calls.calls if c.operation == "SendCommand"]
    assert len(sent) == 1
    return sent[0]


def _group_max_size(size: int) -> None:
    boto3.client("autoscaling", region_name=REGION).update_auto_scaling_group(
        AutoScalingGroupName=GROUP, MaxSize=size
    )


def test_a_quarter_at_a_time_gets_a_deadline_for_every_wave_plus_the_delivery_timeout(
    aws_calls: Any, deps: Any
) -> None:
    # Given a group of up to 8 hosts, deployed 25% at a time, each swap allowed 600 s
    fleet = create_fleet(size=4)
    _group_max_size(8)
    config = _config(fleet.template_id, max_concurrency="25%", command_timeout=600, delivery_timeout=600)
    group = deps.launch_templates.current(config)
    # When the swap is sent to the group
    deps.fleet.send_swap(config, SWAP_PARAMETERS, "deploy", hosts=group.max_size)
    # Then TimeoutSeconds covers the slowest pacing 25% of up to 8 hosts can take (7 hosts at
    # one a time: 7 waves of 600 s) plus 600 s to deliver, not the 600 s of one wave
    assert _sent(aws_calls)["TimeoutSeconds"] == 7 * 600 + 600


def test_an_absolute_concurrency_gets_one_wave_per_batch_of_hosts(aws_calls: Any, deps: Any) -> None:
    # Given a group of up to 6 hosts deployed 2 at a time, 300 s per swap, 120 s to deliver
    fleet = create_fleet(size=2)
    config = _config(fleet.template_id, max_concurrency="2", command_timeout=300, delivery_timeout=120)
    group = deps.launch_templates.current(config)
    # When the swap is sent
    deps.fleet.send_swap(config, SWAP_PARAMETERS, "deploy", hosts=group.max_size)
    # Then the deadline is 3 waves of 300 s plus 120 s
    assert group.max_size == 6
    assert _sent(aws_calls)["TimeoutSeconds"] == 3 * 300 + 120


def test_the_deadline_is_capped_at_ssms_maximum(aws_calls: Any, deps: Any) -> None:
    # Given a large group swapped one host at a time with the longest command timeout
    fleet = create_fleet(size=2)
    _group_max_size(500)
    config = _config(fleet.template_id, max_concurrency="1", command_timeout=28800)
    group = deps.launch_templates.current(config)
    # When the swap is sent
    deps.fleet.send_swap(config, SWAP_PARAMETERS, "deploy", hosts=group.max_size)
    # Then TimeoutSeconds is SSM's documented maximum (30 days), which SSM accepts
    assert _sent(aws_calls)["TimeoutSeconds"] == 2_592_000


def test_a_single_instance_swap_needs_one_wave(aws_calls: Any, deps: Any) -> None:
    # Given one new instance
    fleet = create_fleet(size=1)
    config = _config(fleet.template_id, command_timeout=300, delivery_timeout=600)
    # When the swap is sent to it alone
    deps.fleet.send_swap_to_instances(config, fleet.instance_ids, SWAP_PARAMETERS, "launch")
    # Then the deadline is one command time plus the delivery timeout
    assert _sent(aws_calls)["TimeoutSeconds"] == 300 + 600


@pytest.mark.parametrize(
    ("max_concurrency", "hosts", "expected"),
    [
        ("50%", 1, 1),  # one host: one wave, whatever the percentage
        ("50%", 2, 2),  # 50% of 2 is 1 at a time
        ("50%", 4, 3),  # with 3 hosts left, 50% rounds down to 1: 3 waves
        ("100%", 5, 1),
        ("2", 5, 3),
        ("2", 0, 1),  # an empty group still gets one wave of time
    ],
)
def test_waves_cover_the_slowest_pacing_of_any_fleet_size_up_to_the_hosts(
    max_concurrency: str, hosts: int, expected: int
) -> None:
    assert builders.waves(max_concurrency, hosts) == expected
