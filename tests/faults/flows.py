"""The flows issue 9 names. Each sets the world up through the handlers (uninjected), then hands
back the deliveries under test (whose AWS calls are numbered and faulted) and what the app must end
on once the platform has recovered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.faults import CLOCK
from tests.faults.invariants import Expect
from tests.faults.world import GROUP, Delivery, FaultWorld
from tests.lifecycle.conftest import client, digest_of

# The index (in instance-id order) of the host whose health check fails in the failure flows.
FAILING_HOST = 2


@dataclass(frozen=True)
class Plan:
    deliveries: list[Delivery]  # the events under test: their AWS calls are numbered and faulted
    expect: Expect


@dataclass(frozen=True)
class Flow:
    name: str
    setup: Callable[[FaultWorld], Plan]
    hosts: int = 3
    auto_rollback: bool = True


def _live_on_1(world: FaultWorld) -> str:
    return world.deploy(1, "v1")


def push_deploy(world: FaultWorld) -> Plan:
    _live_on_1(world)
    digest = world.image(2, "v2")
    return Plan([world.push_event(digest, "v2")], Expect(desired=digest, accepted=(digest,)))


def _deploying_2(world: FaultWorld, refused_by: int | None = None) -> tuple[str, str, list[Delivery]]:
    """Release 1 live, release 2 pushed and its command run by the hosts; its events not delivered."""
    first = _live_on_1(world)
    if refused_by is not None:
        world.hosts[world.base.instances[refused_by]].refuses.add(digest_of(2))
    second = world.push(2, "v2")
    return first, second, world.run_hosts()


def completion_success(world: FaultWorld) -> Plan:
    _, second, events = _deploying_2(world)
    return Plan(events, Expect(desired=second, accepted=(second,)))


def completion_failure_rollback(world: FaultWorld) -> Plan:
    first, second, events = _deploying_2(world, refused_by=FAILING_HOST)
    return Plan(events, Expect(desired=first, accepted=(second,)))


def completion_failure_no_rollback(world: FaultWorld) -> Plan:
    _, second, events = _deploying_2(world, refused_by=FAILING_HOST)
    return Plan(events, Expect(desired=second, accepted=(second,), hold=True))


def operator_rollback(world: FaultWorld) -> Plan:
    first = _live_on_1(world)
    world.deploy(2, "v2")
    return Plan([world.operator("rollback.json")], Expect(desired=first))


def promote(world: FaultWorld) -> Plan:
    """v2 failed on one host and was rolled back (its digest refused); the host is fixed, and the
    operator promotes v2 explicitly."""
    _live_on_1(world)
    failing = world.hosts[world.base.instances[FAILING_HOST]]
    failing.refuses.add(digest_of(2))
    second = world.deploy(2, "v2")
    world.settle()
    failing.refuses.clear()
    return Plan([world.operator("promote.json", to=second)], Expect(desired=second))


def resume_pending(world: FaultWorld) -> Plan:
    _live_on_1(world)
    world.invoke_ok(world.operator("pause.json"))
    second = world.push(2, "v2")
    third = world.push(3, "v3")
    return Plan([world.operator("resume.json")], Expect(desired=third, accepted=(second, third)))


def burst(world: FaultWorld) -> Plan:
    _live_on_1(world)
    digests = [world.image(n, f"v{n}") for n in (2, 3, 4)]
    events = [world.push_event(d, f"v{n}") for n, d in zip((2, 3, 4), digests, strict=True)]
    return Plan(events, Expect(desired=digests[-1], accepted=tuple(digests)))


def launch_mid_deploy(world: FaultWorld) -> Plan:
    """An instance launches (booting release 1) and registers with SSM just after release 2's
    command was sent, so only the launch swap can bring it onto release 2."""
    _live_on_1(world)
    new = world.scale_out()
    second = world.push(2, "v2")
    world.register(new)
    return Plan([world.launch_event(new)], Expect(desired=second, accepted=(second,), launched=new))


def reconciler_missed_push(world: FaultWorld) -> Plan:
    _live_on_1(world)
    second = world.image(2, "v2")  # pushed, but its event never arrived
    return Plan([world.schedule_event()], Expect(desired=second, accepted=(second,)))


def reconciler_drift(world: FaultWorld) -> Plan:
    """Release 2 live; someone put the group back on release 1's version, and an instance that
    booted release 1 was let in by hand (no swap, no outcome)."""
    _live_on_1(world)
    first_version = world.group()["LaunchTemplate"]["Version"]
    second = world.deploy(2, "v2")
    client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={
            "LaunchTemplateId": world.group()["LaunchTemplate"]["LaunchTemplateId"],
            "Version": str(first_version),
        },
    )
    new = world.scale_out()
    world.let_in_by_hand(new)
    return Plan([world.schedule_event()], Expect(desired=second))


def _with_secrets(world: FaultWorld) -> dict[str, str]:
    """The app names a Parameter Store parameter and a Secrets Manager secret; their versions now."""
    client("ssm").put_parameter(Name="/web/db-password", Value="first", Type="SecureString")
    client("secretsmanager").create_secret(Name="web/api-key", SecretString="first")
    config = world.base.config
    document = {
        **config.to_document(),
        "environment": {"LOG_LEVEL": "info"},
        "secrets": {"DB_PASSWORD": "ssm:/web/db-password", "API_KEY": "secretsmanager:web/api-key"},
    }
    world.base.config = type(config).parse(document)
    world.base.core.apps.put(world.base.config)
    return {"DB_PASSWORD": "1", "API_KEY": _current_secret_version()}


def _current_secret_version() -> str:
    stages = client("secretsmanager").describe_secret(SecretId="web/api-key")["VersionIdsToStages"]
    return next(str(v) for v, labels in stages.items() if "AWSCURRENT" in labels)


def _new_secret_versions() -> dict[str, str]:
    client("ssm").put_parameter(Name="/web/db-password", Value="second", Type="SecureString", Overwrite=True)
    client("secretsmanager").put_secret_value(SecretId="web/api-key", SecretString="second")
    return {"DB_PASSWORD": "2", "API_KEY": _current_secret_version()}


def push_pins_secrets(world: FaultWorld) -> Plan:
    """v1 live with its secrets' first versions; both change; v2's push pins the new ones."""
    _with_secrets(world)
    _live_on_1(world)
    versions = _new_secret_versions()
    digest = world.image(2, "v2")
    return Plan(
        [world.push_event(digest, "v2")],
        Expect(desired=digest, accepted=(digest,), secret_versions=versions),
    )


def config_only(world: FaultWorld) -> Plan:
    """v1 live; its secrets change; an operator deploys the config alone (v1's image again)."""
    _with_secrets(world)
    first = _live_on_1(world)
    versions = _new_secret_versions()
    request = Delivery("rollback", {"action": "deploy_config", "app": "web", "reason": "rotated"})
    return Plan([request], Expect(desired=first, secret_versions=versions))


def push_missing_secret(world: FaultWorld) -> Plan:
    """v1 live; the Secrets Manager secret is deleted; v2's push is recorded FAILED and nothing
    deploys (v1 stays, with its pinned versions)."""
    versions = _with_secrets(world)
    first = _live_on_1(world)
    client("secretsmanager").delete_secret(SecretId="web/api-key", ForceDeleteWithoutRecovery=True)
    digest = world.image(2, "v2")
    return Plan(
        [world.push_event(digest, "v2")],
        Expect(desired=first, accepted=(digest,), secret_versions=versions),
    )


MIGRATE = ["python", "manage.py", "migrate"]


def task_push(world: FaultWorld) -> Plan:
    """Release 1 live; the app gains a release task; image 2 is pushed: its task goes first."""
    _live_on_1(world)
    world.set_release_task(MIGRATE)
    digest = world.image(2, "v2")
    return Plan([world.push_event(digest, "v2")], Expect(desired=digest, accepted=(digest,)))


def _task_ran(world: FaultWorld, fails: bool) -> tuple[str, str, list[Delivery]]:
    """Release 1 live, release 2 pushed with a task that its host ran; the task's events not delivered."""
    first = _live_on_1(world)
    world.set_release_task(MIGRATE)
    if fails:
        world.task_fails.add(digest_of(2))
    second = world.push(2, "v2")
    return first, second, world.run_hosts()


def task_completion_success(world: FaultWorld) -> Plan:
    _, second, events = _task_ran(world, fails=False)
    return Plan(events, Expect(desired=second, accepted=(second,)))


def task_completion_failure(world: FaultWorld) -> Plan:
    first, second, events = _task_ran(world, fails=True)
    return Plan(events, Expect(desired=first, accepted=(second,), never_sent=(second,)))


# A canary host, its bake (ended by the reconciler's tick), then the rest.
STAGES = [{"hosts": 1, "bake_seconds": 600}, {"hosts": "100%"}]


def staged_push(world: FaultWorld) -> Plan:
    """Release 1 live; the app gains stages; image 2 is pushed: its canary stage goes first."""
    _live_on_1(world)
    world.set_stages(STAGES)
    digest = world.image(2, "v2")
    return Plan([world.push_event(digest, "v2")], Expect(desired=digest, accepted=(digest,)))


def _canary_ran(world: FaultWorld, refused_by: int | None = None) -> tuple[str, str, list[Delivery]]:
    """Release 1 live, staged release 2 pushed and its canary stage run; its events not delivered."""
    first = _live_on_1(world)
    world.set_stages(STAGES)
    if refused_by is not None:
        world.hosts[world.base.instances[refused_by]].refuses.add(digest_of(2))
    second = world.push(2, "v2")
    return first, second, world.run_hosts()


def stage_completion(world: FaultWorld) -> Plan:
    """The canary's events: the release bakes; the reconciler's tick ends the bake, and the last
    stage goes to the other hosts."""
    _, second, events = _canary_ran(world)
    return Plan(events, Expect(desired=second, accepted=(second,)))


def stage_failure(world: FaultWorld) -> Plan:
    """The canary (the first host in zone order) fails its health check: the release fails and
    the rollback puts it back; the other hosts never take release 2."""
    first, second, events = _canary_ran(world, refused_by=0)
    return Plan(events, Expect(desired=first, accepted=(second,)))


def bake_ended_by_reconciler(world: FaultWorld) -> Plan:
    """The canary succeeded and the release bakes; its timer is only the recorded end: the
    reconciler's tick after it starts the last stage (whatever happened to any other trigger)."""
    _, second, events = _canary_ran(world)
    for delivery in events:
        world.invoke_ok(delivery)
    CLOCK.advance(STAGES[0]["bake_seconds"] + 1)
    return Plan([world.schedule_event()], Expect(desired=second, accepted=(second,)))


def launch_mid_canary(world: FaultWorld) -> Plan:
    """An instance launches while release 2's canary bakes: it boots and is swapped to the
    pointer's release 1 (the stable one), and the last stage, after the reconciler ends the
    bake, takes it to release 2 with the rest."""
    _, second, events = _canary_ran(world)
    for delivery in events:
        world.invoke_ok(delivery)
    new = world.scale_out()
    world.register(new)
    assert world.hosts[new].release == 1, "a launch during a canary boots the stable release"
    return Plan([world.launch_event(new)], Expect(desired=second, accepted=(second,), launched=new))


# The canary, then a stage that waits for approval, then the rest.
APPROVED_STAGES = [{"hosts": 1, "approve": True}, {"hosts": "100%"}]


def stage_approved(world: FaultWorld) -> Plan:
    """The canary succeeded and waits for approval; the operator's `deployer continue` starts the
    last stage."""
    _live_on_1(world)
    world.set_stages(APPROVED_STAGES)
    second = world.push(2, "v2")
    world.settle()
    approve = Delivery("rollback", {"app": "web", "action": "continue"})
    return Plan([approve], Expect(desired=second, accepted=(second,)))


def stage_cancelled(world: FaultWorld) -> Plan:
    """The canary succeeded and bakes; the operator cancels: the rollback puts the canary back."""
    first, second, events = _canary_ran(world)
    for delivery in events:
        world.invoke_ok(delivery)
    cancel = world.operator("rollback.json", action="cancel")
    return Plan([cancel], Expect(desired=first, accepted=(second,)))


def _canary_baking(world: FaultWorld, canary_errors: int) -> tuple[str, str]:
    """Release 1 live, staged release 2's canary took it and bakes; the canary's host answered 10
    requests a second (`canary_errors` of them 5xx), the stable hosts 30 with none, for 20 s."""
    first, second, events = _canary_ran(world)
    for delivery in events:
        world.invoke_ok(delivery)
    world.put_proxy_metrics(2, 20, requests=10, errors=canary_errors, p99_ms=40.0)
    world.put_proxy_metrics(1, 20, requests=30, errors=0, p99_ms=40.0)
    CLOCK.advance(30)
    return first, second


def canary_analysis_fails(world: FaultWorld) -> Plan:
    """The canary answers 20 % 5xx, the stable release none: the next converge (the reconciler's
    tick, long before the bake's end) fails release 2 and the rollback puts its host back."""
    first, second = _canary_baking(world, canary_errors=2)
    return Plan([world.schedule_event()], Expect(desired=first, accepted=(second,)))


def canary_analysis_passes(world: FaultWorld) -> Plan:
    """A healthy canary: the converge at the bake's end records a passing check and the last stage
    takes every host."""
    _, second = _canary_baking(world, canary_errors=0)
    CLOCK.advance(STAGES[0]["bake_seconds"])
    return Plan([world.schedule_event()], Expect(desired=second, accepted=(second,)))


# Alarm gates and the stage tick chain (docs/stages.md).
ALARM = "web-errors"


def alarm_stops_stage(world: FaultWorld) -> Plan:
    """The canary succeeded and bakes; the app's alarm goes into ALARM and its event arrives: the
    release fails (DescribeAlarms confirms it) and the rollback puts the canary back; the other
    hosts never take release 2."""
    first = _live_on_1(world)
    world.set_stages(STAGES)
    world.set_alarms(ALARM)
    second = world.push(2, "v2")
    for delivery in world.run_hosts():
        world.invoke_ok(delivery)
    world.take_ticks()
    world.set_alarm_state(ALARM, "ALARM", "Threshold Crossed: 42 5xx in 60 s")
    return Plan([world.alarm_event(ALARM)], Expect(desired=first, accepted=(second,)))


def _baking_with_a_tick(world: FaultWorld) -> tuple[str, Delivery]:
    """Release 1 live; staged release 2's canary succeeded: it bakes, and its first tick is out."""
    _, second, events = _canary_ran(world)
    for delivery in events:
        world.invoke_ok(delivery)
    (tick,) = world.take_ticks()
    return second, tick


def stage_tick(world: FaultWorld) -> Plan:
    """The first tick arrives when due: it converges the app and sends the next one (a crash
    before or after that send, or the tick delivered twice, still leaves one chain); the bake
    ends and the last stage goes out."""
    second, tick = _baking_with_a_tick(world)
    CLOCK.advance(world.base.config.rollout.analysis.interval_seconds)
    return Plan([tick], Expect(desired=second, accepted=(second,)))


def stage_tick_lost(world: FaultWorld) -> Plan:
    """The first tick is lost; the reconciler's converge after its due time sends another (the
    chain goes on), and the bake ends."""
    second, _ = _baking_with_a_tick(world)
    CLOCK.advance(world.base.config.rollout.analysis.interval_seconds + 15)
    return Plan([world.schedule_event()], Expect(desired=second, accepted=(second,)))


FLOWS: tuple[Flow, ...] = (
    Flow("push_deploy", push_deploy),
    Flow("completion_success", completion_success),
    Flow("completion_failure_rollback", completion_failure_rollback),
    Flow("completion_failure_no_rollback", completion_failure_no_rollback, auto_rollback=False),
    Flow("operator_rollback", operator_rollback),
    Flow("promote", promote),
    Flow("resume_pending", resume_pending),
    Flow("burst", burst),
    Flow("launch_mid_deploy", launch_mid_deploy),
    Flow("reconciler_missed_push", reconciler_missed_push),
    Flow("reconciler_drift", reconciler_drift),
    Flow("push_pins_secrets", push_pins_secrets),
    Flow("config_only", config_only),
    Flow("push_missing_secret", push_missing_secret),
    Flow("task_push", task_push),
    Flow("task_completion_success", task_completion_success),
    Flow("task_completion_failure", task_completion_failure),
    Flow("staged_push", staged_push, hosts=4),
    Flow("stage_completion", stage_completion, hosts=4),
    Flow("stage_failure", stage_failure, hosts=4),
    Flow("bake_ended_by_reconciler", bake_ended_by_reconciler, hosts=4),
    Flow("stage_approved", stage_approved, hosts=4),
    Flow("launch_mid_canary", launch_mid_canary, hosts=4),
    Flow("stage_cancelled", stage_cancelled, hosts=4),
    Flow("canary_analysis_fails", canary_analysis_fails, hosts=4),
    Flow("canary_analysis_passes", canary_analysis_passes, hosts=4),
    Flow("alarm_stops_stage", alarm_stops_stage, hosts=4),
    Flow("stage_tick", stage_tick, hosts=4),
    Flow("stage_tick_lost", stage_tick_lost, hosts=4),
)
