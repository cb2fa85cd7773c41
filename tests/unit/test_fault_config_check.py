"""The fault suite's config check can fail: a pointer pinning other versions, or a command of the
pointer's release sent with another config, is reported."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

# tests/faults/__init__.py installs the suite's clock and refuses to load once the deployer is
# imported; its invariants module is plain Python, loaded here on its own.
_PATH = Path(__file__).resolve().parents[1] / "faults" / "invariants.py"
_SPEC = importlib.util.spec_from_file_location("fault_invariants", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
invariants = importlib.util.module_from_spec(_SPEC)
sys.modules["fault_invariants"] = invariants
_SPEC.loader.exec_module(invariants)
Expect = invariants.Expect
Seen = invariants.Seen
the_pointers_release_runs_the_pinned_secret_versions = (
    invariants.the_pointers_release_runs_the_pinned_secret_versions
)


def encoded(version: str) -> str:
    payload = {
        "v": 1,
        "environment": {},
        "secrets": [{"var": "API_KEY", "from": "ssm", "id": "/k", "version": version}],
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


def seen(pointer_config: str, sent: set[str], ticks: dict[int, list[tuple[int, int]]] | None = None) -> Any:
    return Seen(
        pointer_release=2,
        pointer_digest="sha256:" + "2" * 64,
        group_release=2,
        group_image=None,
        in_service={},
        hosts={},
        instance_states={},
        releases={},
        before={},
        lock_owner=None,
        running_commands=frozenset(),
        fleet_sends=Counter(),
        notices={},
        pointer_config=pointer_config,
        release_configs={2: sent},
        task_sends=Counter(),
        task_runs={},
        release_sends=Counter(),
        standby_flags=(),
        ticks=ticks or {},
    )


EXPECT = Expect(desired="sha256:" + "2" * 64, secret_versions={"API_KEY": "2"})


def test_the_pinned_versions_pass() -> None:
    assert (
        list(the_pointers_release_runs_the_pinned_secret_versions(seen(encoded("2"), {encoded("2")}), EXPECT))
        == []
    )


def test_a_pointer_pinning_another_version_is_reported() -> None:
    found = list(
        the_pointers_release_runs_the_pinned_secret_versions(seen(encoded("1"), {encoded("1")}), EXPECT)
    )
    assert found == ["pointer pins {'API_KEY': '1'}, expected {'API_KEY': '2'}"]


def test_a_command_sent_with_another_config_is_reported() -> None:
    found = list(
        the_pointers_release_runs_the_pinned_secret_versions(seen(encoded("2"), {encoded("2"), ""}), EXPECT)
    )
    assert found == ["release 2 was sent with {}"]


def test_a_second_tick_chain_is_reported_and_one_chain_is_not() -> None:
    one_chain = {2: [(100, 130), (130, 160), (175, 205)]}  # the third after a lost tick
    two_chains = {2: [(100, 130), (100, 130)]}  # a duplicate that sent its own
    check = invariants.at_most_one_tick_chain_per_baking_release
    assert list(check(seen("", set(), one_chain), EXPECT)) == []
    assert list(check(seen("", set(), two_chains), EXPECT)) == [
        "release 2: a tick due at 130 sent at 100, before 130"
    ]
