"""Pending releases are read from the sparse `pending-index`: O(pending), not O(history)."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest
from deployer import controller
from deployer.admission import PushAction, accept_push
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseStatus

from tests.conftest import REGION, make_release

pytestmark = pytest.mark.unit


def _raw(number: int) -> dict[str, Any]:
    item: dict[str, Any] = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="ReleasesTable", Key={"app": {"S": "web"}, "release": {"N": str(number)}}
    )["Item"]
    return item


class QueryLog:
    """Every Query the releases store's client makes: its request and how many items it read."""

    def __init__(self, client: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self.scanned: list[int] = []
        client.meta.events.register("provide-client-params.dynamodb.Query", self._request)
        client.meta.events.register("after-call.dynamodb.Query", self._response)

    def _request(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(dict(params))

    def _response(self, parsed: dict[str, Any], **_: Any) -> None:
        self.scanned.append(parsed["ScannedCount"])


def test_reading_pending_releases_reads_only_the_pending_ones(deps: Any) -> None:
    # Given a long history (40 finished releases) and two PENDING releases
    for number in range(1, 41):
        deps.releases.create(make_release(number, status=ReleaseStatus.SUCCEEDED))
    deps.releases.create(make_release(41, status=ReleaseStatus.PENDING))
    deps.releases.create(make_release(42, status=ReleaseStatus.PENDING))
    log = QueryLog(deps.clients.client("dynamodb"))

    # When the pending releases are read
    pending = deps.releases.pending("web")

    # Then both come back, oldest first, from one Query of the pending index with no filter
    # that read two items, not the app's 42
    assert [r.release for r in pending] == [41, 42]
    assert len(log.requests) == 1
    assert log.requests[0]["IndexName"] == "pending-index"
    assert "FilterExpression" not in log.requests[0]
    assert log.scanned == [2]


@pytest.mark.parametrize("target", [ReleaseStatus.DEPLOYING, ReleaseStatus.SUPERSEDED])
def test_every_move_out_of_pending_removes_the_index_key_in_the_same_write(
    deps: Any, target: ReleaseStatus
) -> None:
    # Given a PENDING release, which carries the index key
    deps.releases.create(make_release(1, status=ReleaseStatus.PENDING))
    assert _raw(1)["pending_app"] == {"S": "web"}

    # When it leaves PENDING
    leave = controller.Transition(1, target, "test", frozenset({ReleaseStatus.PENDING}))
    controller.commit(deps, controller.Decision("web").transition(leave))

    # Then the key is gone and the release is no longer pending
    item = _raw(1)
    assert item["status"] == {"S": target.value}
    assert "pending_app" not in item
    assert deps.releases.pending("web") == []


def test_a_release_recorded_deploying_never_carries_the_key(deps: Any) -> None:
    deps.releases.create(make_release(1, status=ReleaseStatus.DEPLOYING))
    assert "pending_app" not in _raw(1)


def test_pushes_queued_behind_a_deploy_are_pending_until_superseded(
    deps: Any, registered_app: Any, fleet: Any, load_event: Any
) -> None:
    # Given a deploy in progress (push 1) and push 2 queued behind it
    def push(byte: str, tag: str) -> Any:
        event = copy.deepcopy(load_event("ecr_image_push"))
        event["detail"]["image-digest"] = "sha256:" + byte * 64
        event["detail"]["image-tag"] = tag
        return accept_push(deps, parse_push_event(event)).results[0]

    assert push("1", "v1").action is PushAction.STARTED
    assert push("2", "v2").action is PushAction.PENDING
    assert _raw(2)["pending_app"] == {"S": "web"}

    # When push 3 arrives, superseding push 2
    assert push("3", "v3").action is PushAction.PENDING

    # Then 2 is SUPERSEDED without the key, 3 is the one pending, and 1 never had it
    assert _raw(2)["status"] == {"S": "SUPERSEDED"}
    assert "pending_app" not in _raw(2)
    assert [r.release for r in deps.releases.pending("web")] == [3]
    assert "pending_app" not in _raw(1)
