"""Starting a release when a call fails part-way: who may send, what is sent, and how often.

The send claim (docs/architecture.md, "The release controller") decides who may send a
release's command; these tests fail a call at each side of SendCommand and observe the commands
SSM received and the release record, never the claim's internals.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import botocore.handlers
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from deployer import controller
from deployer.admission import PushAction, accept_push
from deployer.aws import ClientFactory
from deployer.errors import AwsCallFailed
from deployer.models.records import ReleaseStatus
from deployer.wiring import Adapters

from localcloud import moto_gaps
from tests.conftest import REGION
from tests.unit.test_state_and_rollout import T0, clock, push

__all__ = ["clock"]  # the fixture, used by name

pytestmark = pytest.mark.unit


def one_attempt_adapters(deps: Any, settings: Any) -> Adapters:
    """Adapters whose clients make one attempt per call (botocore's own retries are not under
    test), sharing the test's clock."""
    ad = Adapters.from_settings(
        settings,
        clients=ClientFactory(
            region=REGION, config=Config(retries={"mode": "standard", "total_max_attempts": 1})
        ),
    )
    ad.state = deps.state
    return ad


def failing(code: str, operation: str) -> AwsCallFailed:
    error = ClientError({"Error": {"Code": code, "Message": code}}, operation)
    failure = AwsCallFailed(f"{operation} failed: {code}")
    failure.__cause__ = error
    return failure


def test_a_start_throttled_before_sending_lets_the_platforms_retry_send_at_once(
    deps: Any,
    settings: Any,
    registered_app: Any,
    load_event: Any,
    clock: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ad = one_attempt_adapters(deps, settings)
    # Given SendCommand throttled once
    original = ad.fleet.send_swap
    calls = {"n": 0}

    def throttled_once(*args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise failing("ThrottlingException", "SendCommand")
        return original(*args, **kwargs)

    monkeypatch.setattr(ad.fleet, "send_swap", throttled_once)
    # When a push is accepted, its invocation fails (the platform retries it)
    with pytest.raises(AwsCallFailed):
        accept_push(ad, push(load_event, "1", "v1"))
    assert moto_gaps.commands() == []

    # and the retry comes a minute later, well before a claim could go stale
    clock[0] = T0 + 60
    report = controller.converge(ad, "web")

    # Then the retry sent the release, once, and recorded it
    commands = moto_gaps.commands()
    assert len(commands) == 1
    assert deps.releases.get("web", 1).command_id == commands[0].command_id == report.command_id


def test_a_send_that_reached_ssm_before_failing_is_found_and_never_sent_twice(
    deps: Any,
    settings: Any,
    registered_app: Any,
    load_event: Any,
    clock: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ad = one_attempt_adapters(deps, settings)
    # Given a SendCommand that reaches SSM but whose answer is lost (a timeout, a 5xx)
    original = ad.fleet.send_swap

    def lost_answer(*args: Any, **kwargs: Any) -> str:
        original(*args, **kwargs)
        raise failing("InternalServerError", "SendCommand")

    monkeypatch.setattr(ad.fleet, "send_swap", lost_answer)
    with pytest.raises(AwsCallFailed):
        accept_push(ad, push(load_event, "1", "v1"))
    monkeypatch.undo()
    assert len(moto_gaps.commands()) == 1

    # When the retry comes before the claim is stale, it leaves the release alone
    clock[0] = T0 + 60
    controller.converge(deps, "web")
    assert len(moto_gaps.commands()) == 1
    assert deps.releases.get("web", 1).command_id is None

    # and once it is stale, the next trigger finds the command by its comment
    clock[0] = T0 + controller.SEND_CLAIM_SECONDS + 1
    report = controller.converge(deps, "web")
    commands = moto_gaps.commands()
    assert len(commands) == 1
    assert deps.releases.get("web", 1).command_id == commands[0].command_id == report.command_id


@pytest.fixture
def slow_send_command(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """SSM accepts every SendCommand request put on the wire (moto creates the command) but its
    answer never arrives within the read timeout. Installed for clients created from now on;
    returns the operation of each request on the wire."""
    from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415
    from moto.core.models import botocore_stubber  # noqa: PLC0415

    wire: list[str] = []

    def accept_then_time_out(request: Any, event_name: str, **kwargs: Any) -> None:
        wire.append(event_name.rsplit(".", 1)[-1])
        botocore_stubber(event_name=event_name, request=request, **kwargs)
        raise ReadTimeoutError(endpoint_url=request.url)

    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        [("before-send.ssm.SendCommand", accept_then_time_out), *botocore.handlers.BUILTIN_HANDLERS],
    )
    return wire


def test_a_send_command_answer_that_times_out_is_never_sent_again_by_the_client(
    slow_send_command: list[str], deps: Any, registered_app: Any, load_event: Any, clock: list[float]
) -> None:
    # Given SSM that takes SendCommand but answers after the functions' read timeout, and the
    # functions' own clients (3 attempts for every other call)
    # When a push deploys
    with pytest.raises(AwsCallFailed):
        accept_push(deps, push(load_event, "1", "v1"))

    # Then SendCommand went on the wire once, so SSM holds one command, and the release keeps
    # its send claim for the lookup rather than a second send
    assert slow_send_command == ["SendCommand"]
    assert len(moto_gaps.commands()) == 1
    release = deps.releases.get("web", 1)
    assert release.command_id is None
    assert release.send_claim is not None

    # and once the claim is stale, the next trigger finds that command and sends none
    clock[0] = T0 + controller.SEND_CLAIM_SECONDS + 1
    report = controller.converge(deps, "web")
    assert slow_send_command == ["SendCommand"]
    assert deps.releases.get("web", 1).command_id == moto_gaps.commands()[0].command_id == report.command_id


def test_a_takeover_minutes_after_the_claim_went_stale_finds_the_command_and_sends_none(
    slow_send_command: list[str], deps: Any, registered_app: Any, load_event: Any, clock: list[float]
) -> None:
    # Given a push whose SendCommand reached SSM but whose answer was lost, 8 minutes ago (the
    # command's RequestedDateTime and the release's start are moved back; SSM's ListCommands
    # honours InvokedAfter, localcloud.moto_gaps gap 11), and another app's command before it
    with pytest.raises(AwsCallFailed):
        accept_push(deps, push(load_event, "1", "v1"))
    [command] = moto_gaps.commands()
    eight_minutes = timedelta(minutes=8)
    command.requested_date_time -= eight_minutes
    started = deps.releases.get("web", 1).deploy_started_at
    deps.releases.set_fields("web", 1, deploy_started_at=started - eight_minutes)

    # When the next trigger comes minutes after the claim went stale
    clock[0] = T0 + controller.SEND_CLAIM_SECONDS + 6 * 60
    report = controller.converge(deps, "web")

    # Then exactly one SendCommand was made, and the release records that command
    assert slow_send_command == ["SendCommand"]
    assert [c.command_id for c in moto_gaps.commands()] == [command.command_id]
    assert deps.releases.get("web", 1).command_id == command.command_id == report.command_id


def test_a_command_ssm_refuses_fails_the_start_and_frees_the_app(
    deps: Any,
    settings: Any,
    registered_app: Any,
    load_event: Any,
    clock: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ad = one_attempt_adapters(deps, settings)

    def refused(*args: Any, **kwargs: Any) -> str:
        raise failing("InvalidDocument", "SendCommand")

    monkeypatch.setattr(ad.fleet, "send_swap", refused)
    outcome = accept_push(ad, push(load_event, "1", "v1"))

    assert outcome.results[0].action is PushAction.FAILED
    release = deps.releases.get("web", 1)
    assert release.status is ReleaseStatus.FAILED
    assert "InvalidDocument" in release.status_reason
    assert deps.state.get("web").lock_owner is None
    assert moto_gaps.commands() == []
