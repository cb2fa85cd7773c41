"""The README's worked progressive-delivery config is a config the product accepts, as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deployer.models.config import AppConfig

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_worked_stages_config_is_accepted_as_written() -> None:
    # Given the README's worked `rollout` block, in an otherwise minimal app config
    text = README.read_text()
    start = text.index('```json\n"rollout": {') + len("```json\n")
    block = json.loads("{" + text[start : text.index("```", start)] + "}")
    base = {
        "app": "web",
        "repository": "web",
        "auto_scaling_group": "web-asg",
        "launch_template": "web-lt",
        "container": {"port": 8080},
    }
    # When it is parsed as a stored config would be
    config = AppConfig.parse({**base, **block})
    # Then every field it shows is read as the README explains it
    rollout = config.rollout
    assert [(s.hosts, s.bake_seconds, s.approve) for s in rollout.stages] == [
        (1, 300, False),
        ("25%", 120, True),
        ("100%", 0, False),
    ]
    assert (rollout.analysis.interval_seconds, rollout.analysis.min_requests) == (30, 50)
    assert rollout.alarms == ("checkout-errors", "payment-latency-p99")
