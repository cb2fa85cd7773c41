"""Operator actions through the rollback function: rollback, promote, pause/resume, status."""

from __future__ import annotations

import io
import json

import pytest
from deployer import cli
from deployer.admission import accept_push
from deployer.entry.events import handle_operation
from deployer.errors import AppNotFound, DeployInProgress, ImageNotFound, InvalidEvent, ReleaseNotFound
from deployer.models.events import parse_push_event
from deployer.models.lifecycle_events import parse_operation
from deployer.models.records import ReleaseSource, ReleaseStatus
from deployer.operations import find_in_history

from tests.lifecycle.conftest import World, client, load_event, snapshot

pytestmark = pytest.mark.unit


def _sent(command_id: str | None) -> dict[str, list[str]]:
    """The parameters of the swap command SSM was sent."""
    assert command_id, "the release sent no swap command"
    return dict(client("ssm").list_commands(CommandId=command_id)["Commands"][0]["Parameters"])


def _two_good_releases(world: World) -> None:
    world.complete(world.push(1, "v1"))
    world.complete(world.push(2, "v2"))


def test_rollback_with_no_target_goes_to_the_previous_succeeded_release(world: World) -> None:
    # Given releases 1 and 2 live in turn
    _two_good_releases(world)
    # When an operator invokes the rollback function with only the app
    answer = handle_operation(world.ld, load_event("rollback.json"))
    # Then release 3 deploys release 1's image with source=rollback (the command sent to the
    # hosts carries that image), and release 2 still reads SUCCEEDED while its rollback runs
    assert answer["target"] == 1
    rollback = world.release(answer["release"])
    assert rollback.source is ReleaseSource.ROLLBACK
    assert rollback.digest == world.release(1).digest
    assert rollback.reason == "errors after release 7"
    assert rollback.rollback_of == 2
    assert _sent(rollback.command_id)["image"] == [world.release(1).image]
    assert world.release(2).status is ReleaseStatus.SUCCEEDED
    assert world.core.pointer.get("web").release == 3  # type: ignore[union-attr]
    # When the rollback succeeds, release 2 is ROLLED_BACK and everything runs release 1's image
    world.complete(rollback)
    assert world.release(2).status is ReleaseStatus.ROLLED_BACK
    assert world.assert_agree().digest == world.release(1).digest


def test_rollback_with_no_target_skips_a_release_whose_image_is_gone_from_ecr(world: World) -> None:
    # Given releases 1, 2 and 3 live in turn, and release 2's image deleted from ECR
    _two_good_releases(world)
    world.complete(world.push(3, "v3"))
    client("ecr").batch_delete_image(
        repositoryName="web", imageIds=[{"imageDigest": world.release(2).digest}]
    )
    # When an operator rolls back without naming a target
    answer = handle_operation(world.ld, {"app": "web"})
    # Then release 1's image deploys (the newest older success whose image hosts can still pull)
    assert answer["target"] == 1
    assert _sent(world.release(answer["release"]).command_id)["image"] == [world.release(1).image]


def test_rollback_with_no_target_whose_only_candidate_is_gone_from_ecr_is_refused(world: World) -> None:
    # Given releases 1 and 2 live in turn, and release 1's image deleted from ECR
    _two_good_releases(world)
    client("ecr").batch_delete_image(
        repositoryName="web", imageIds=[{"imageDigest": world.release(1).digest}]
    )
    before = snapshot(world)
    # When an operator rolls back without naming a target
    with pytest.raises(ReleaseNotFound, match="with a different image still in ECR"):
        handle_operation(world.ld, {"app": "web"})
    # Then nothing changed
    assert snapshot(world) == before


def test_rollback_to_a_tag_a_number_or_a_digest_names_the_same_release(world: World) -> None:
    _two_good_releases(world)
    first = world.release(1)
    for to in ("v1", 1, first.digest):
        request = parse_operation({"app": "web", "to": to})
        assert find_in_history(world.ld, "web", request.to).release == 1  # type: ignore[union-attr,arg-type]


def test_rollback_with_no_previous_release_is_refused_and_changes_nothing(world: World) -> None:
    # Given a single release
    world.complete(world.push(1, "v1"))
    before = snapshot(world)
    # When an operator asks for a rollback
    with pytest.raises(ReleaseNotFound, match="no SUCCEEDED release before release 1"):
        handle_operation(world.ld, {"app": "web"})
    # Then nothing changed
    assert snapshot(world) == before


def test_rollback_before_any_deploy_is_refused(world: World) -> None:
    with pytest.raises(ReleaseNotFound, match="never been deployed"):
        handle_operation(world.ld, {"app": "web"})


def test_rollback_to_an_unknown_tag_names_the_tag_and_changes_nothing(world: World) -> None:
    _two_good_releases(world)
    before = snapshot(world)
    with pytest.raises(ReleaseNotFound, match=r"web has no release with tag v9\.9 in its history"):
        handle_operation(world.ld, {"app": "web", "to": "v9.9"})
    assert snapshot(world) == before


def test_rollback_to_an_image_deleted_from_ecr_names_the_digest_and_changes_nothing(world: World) -> None:
    # Given release 1's image was deleted from ECR
    _two_good_releases(world)
    digest = world.release(1).digest
    client("ecr").batch_delete_image(repositoryName="web", imageIds=[{"imageDigest": digest}])
    before = snapshot(world)
    # When an operator rolls back to it
    with pytest.raises(ImageNotFound, match=f"image {digest} is not in ECR repository web"):
        handle_operation(world.ld, {"app": "web", "to": 1})
    # Then nothing changed
    assert snapshot(world) == before


def test_rollback_during_a_deploy_is_refused_naming_the_deploy(world: World) -> None:
    _two_good_releases(world)
    world.push(3, "v3")
    before = snapshot(world)
    with pytest.raises(DeployInProgress, match=r"web is deploying \(web#3\)"):
        handle_operation(world.ld, {"app": "web"})
    assert snapshot(world) == before


def test_requests_for_an_unknown_app_or_with_bad_fields_are_refused(world: World) -> None:
    with pytest.raises(AppNotFound):
        handle_operation(world.ld, {"app": "api"})
    with pytest.raises(InvalidEvent, match=r"^invalid request: to: Value error, is not a release number"):
        handle_operation(world.ld, {"app": "web", "to": "v1;reboot"})
    with pytest.raises(InvalidEvent, match=r"^invalid request: action: "):
        handle_operation(world.ld, {"app": "web", "action": "explode"})
    with pytest.raises(InvalidEvent, match="force: Extra inputs are not permitted"):
        handle_operation(world.ld, {"app": "web", "force": True})
    assert world.core.releases.list_recent("web") == []


def test_promote_deploys_a_refused_digest_explicitly_and_lifts_the_refusal(world: World) -> None:
    # Given release 2's digest failed and was rolled back
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    answer = world.complete(second, failures={world.instances[0]: "health"})
    world.complete(world.release(answer["rollback_release"]))
    assert second.digest in world.core.state.get("web").refused_digests
    # When an operator promotes that digest
    promoted = handle_operation(
        world.ld, {"action": "promote", "app": "web", "to": second.digest, "reason": "fixed"}
    )
    # Then it deploys as a manual release and is no longer refused
    release = world.release(promoted["release"])
    assert release.source is ReleaseSource.MANUAL
    assert release.digest == second.digest
    assert release.tag == "v2"
    assert release.image == second.image
    assert second.digest not in world.core.state.get("web").refused_digests
    # And once it is live, a later push of that digest deploys again
    world.complete(release)
    _push_deploys(world, second.digest, "v2-rebuilt")


def test_an_operator_rollback_to_a_refused_digest_lifts_the_refusal(world: World) -> None:
    # Given release 2's digest failed, was rolled back and is refused
    world.complete(world.push(1, "v1"))
    second = world.push(2, "v2")
    answer = world.complete(second, failures={world.instances[0]: "health"})
    world.complete(world.release(answer["rollback_release"]))
    assert second.digest in world.core.state.get("web").refused_digests
    # When an operator rolls back to release 2 by number (say, the fault was elsewhere)
    rolled = handle_operation(world.ld, {"app": "web", "to": second.release, "reason": "db fixed"})
    # Then release 2's image deploys and is no longer refused
    rollback = world.release(rolled["release"])
    assert (rollback.source, rollback.digest) == (ReleaseSource.ROLLBACK, second.digest)
    assert _sent(rollback.command_id)["image"] == [second.image]
    assert second.digest not in world.core.state.get("web").refused_digests
    # And once it is live, a later push of that digest deploys again
    world.complete(rollback)
    _push_deploys(world, second.digest, "v2-rebuilt")


def _push_deploys(world: World, digest: str, tag: str) -> None:
    """Push `digest` again under `tag`: it must start a deploy whose command sends that image."""
    outcome = accept_push(world.core, parse_push_event(world.push_event(digest, tag)))
    result = outcome.results[0]
    assert result.action.value == "started", result
    assert result.release is not None
    release = world.release(result.release)
    assert release.digest == digest
    assert _sent(release.command_id)["image"] == [release.image]


def test_promote_by_tag_finds_the_image_in_ecr(world: World) -> None:
    world.complete(world.push(1, "v1"))
    digest = world.image(5, "hotfix")
    answer = handle_operation(world.ld, {"action": "promote", "app": "web", "to": "hotfix"})
    assert world.release(answer["release"]).digest == digest


def test_promote_of_a_tag_not_in_ecr_is_refused_and_changes_nothing(world: World) -> None:
    world.complete(world.push(1, "v1"))
    before = snapshot(world)
    with pytest.raises(ImageNotFound, match="tag nope is not in ECR repository web"):
        handle_operation(world.ld, {"action": "promote", "app": "web", "to": "nope"})
    assert snapshot(world) == before


def test_pushes_while_paused_wait_and_the_newest_starts_on_resume(world: World) -> None:
    # Given release 1 live and automatic deploys paused
    world.complete(world.push(1, "v1"))
    handle_operation(world.ld, load_event("pause.json"))
    # When two pushes arrive
    world.push(2, "v2")
    world.push(3, "v3")
    # Then both wait (the older superseded) and nothing deploys
    assert world.release(2).status is ReleaseStatus.SUPERSEDED
    assert world.release(3).status is ReleaseStatus.PENDING
    assert world.core.state.get("web").lock_owner is None
    # When deploys resume
    answer = handle_operation(world.ld, load_event("resume.json"))
    # Then the newest starts
    assert answer["release"] == 3
    assert world.release(3).status is ReleaseStatus.DEPLOYING


def test_status_lists_the_history_pointer_and_flags(world: World) -> None:
    _two_good_releases(world)
    answer = handle_operation(world.ld, {"action": "status", "app": "web", "limit": 5})
    assert answer["pointer"]["release"] == 2
    assert [r["release"] for r in answer["releases"]] == [2, 1]
    assert answer["paused"] is False
    assert answer["deploying"] is None


def test_the_cli_runs_the_same_actions_and_reports_errors_plainly(world: World) -> None:
    # Given two good releases
    _two_good_releases(world)
    out, err = io.StringIO(), io.StringIO()
    # When an operator rolls back from the command line
    code = cli.main(["rollback", "web", "--reason", "cli", "--json"], deps=world.core, out=out, err=err)
    # Then release 3 deploys release 1's image
    assert code == 0
    assert json.loads(out.getvalue())["target"] == 1
    # And a target missing from the history is one error line and the usage exit status 4
    code = cli.main(["rollback", "web", "--to", "v404"], deps=world.core, out=out, err=err)
    assert code == 4
    assert err.getvalue() == "error: web has no release with tag v404 in its history\n"
    history = io.StringIO()
    assert cli.main(["history", "web", "--limit", "2", "--json"], deps=world.core, out=history, err=err) == 0
    assert [r["release"] for r in json.loads(history.getvalue())] == [3, 2]
