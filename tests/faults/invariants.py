"""The invariant every case must end in, read from the world only: the SSM pointer parameter, the
group's launch-template version and its user data, the simulated hosts, the release records, the
lock item, the commands sent and their parameters, and the SNS messages (docs/faults.md).

The world is observed once (`Seen`); each check is one function of what was seen, named as the
sentence that must hold, yielding what contradicts it.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer import markers

from tests.lifecycle.conftest import TASK_DOCUMENT

if TYPE_CHECKING:
    from tests.faults.world import FaultWorld
    from tests.lifecycle.conftest import SimHost

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "ROLLED_BACK", "SUPERSEDED", "CANCELLED"})
# What a release's final status must have been announced as (notify.build_message's `event`).
NOTICES = {
    "SUCCEEDED": {"deploy_succeeded"},
    "FAILED": {"deploy_failed", "deploy_rolled_back"},
    "ROLLED_BACK": {"deploy_rolled_back", "deploy_failed"},
}
RUNNING = frozenset({"Pending", "InProgress", "In Progress", "Delayed"})


@dataclass(frozen=True)
class Expect:
    """What the flow must end in."""

    desired: str  # the digest pointer, group and hosts must end on
    accepted: tuple[str, ...] = ()  # digests pushed during the flow: each ends in a terminal record
    # A failure without automatic rollback: the failed release stays the pointer and FAILED; the
    # hosts that refused it keep the release they had, and nothing sends it to them again.
    hold: bool = False
    launched: str | None = None  # an instance that must end InService
    # Config flows: the secret versions (variable -> version) the pointer's release must pin,
    # which every command of that release carries too.
    secret_versions: dict[str, str] | None = None
    never_sent: tuple[str, ...] = ()  # digests no fleet command may carry (a failed release task)


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"invariant": self.invariant, "detail": self.detail}


@dataclass(frozen=True)
class Seen:
    """The world once the platform has recovered."""

    pointer_release: int | None
    pointer_digest: str | None
    group_release: int | None
    group_image: str | None
    in_service: dict[str, SimHost]
    hosts: dict[str, SimHost]
    instance_states: dict[str, str]
    releases: dict[int, dict[str, Any]]
    before: dict[int, str]  # each release's status when the flow began
    lock_owner: str | None
    running_commands: frozenset[str]
    fleet_sends: Counter[str]  # digest -> fleet-wide commands sent during the flow
    notices: dict[int, set[str]]  # release -> the `event` of every message about it
    pointer_config: str  # the pointer's `release_config`
    release_configs: dict[int, set[str]]  # release -> the `releaseConfig` of each command sent for it
    task_sends: Counter[int]  # release -> task commands sent during the flow
    task_runs: dict[int, int]  # release -> how often a host ran its task
    # (release, instance, "stage" | "last") -> swap commands of that release's rollout (its stages
    # before the last, and its fleet-wide command) that reached the instance, set-up included (a
    # canary is sent before the flow)
    release_sends: Counter[tuple[int, str, str]]
    # (comment, keepStandby) of every swap command sent, set-up included
    standby_flags: tuple[tuple[str, str | None], ...]
    # release -> (sent at, due) of each stage tick the queue holds (the suite's clock)
    ticks: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, world: FaultWorld, before: dict[int, str]) -> Seen:
        pointer = world.pointer() or {}
        group_release, group_image = world.launch_template_release()
        states = {i["InstanceId"]: i["LifecycleState"] for i in world.group()["Instances"]}
        notices: dict[int, set[str]] = {}
        for message in world.messages():
            notices.setdefault(int(message.get("release", 0)), set()).add(str(message.get("event")))
        return cls(
            pointer_release=pointer.get("release"),
            pointer_digest=pointer.get("digest"),
            group_release=group_release,
            group_image=group_image,
            in_service={i: h for i, h in world.hosts.items() if states.get(i) == "InService"},
            hosts=dict(world.hosts),
            instance_states=states,
            releases={int(r["release"]): r for r in world.releases()},
            before=before,
            lock_owner=world.lock().get("lock_owner"),
            running_commands=frozenset(
                c.command_id for c in world.base.shim.commands() if c.status in RUNNING
            ),
            fleet_sends=Counter(
                c.parameters["image"][0].rpartition("@")[2] for c in world.commands_since_mark() if c.targets
            ),
            notices=notices,
            pointer_config=str(pointer.get("release_config") or ""),
            release_configs=_release_configs(world.base.shim.commands()),
            task_sends=Counter(
                int(c.parameters["release"][0])
                for c in world.commands_since_mark()
                if c.document_name == TASK_DOCUMENT
            ),
            task_runs=dict(world.task_runs),
            release_sends=Counter(
                (int(c.parameters["release"][0]), iid, _send_kind(c.comment))
                for c in world.base.shim.commands()
                if markers.parse_stage_comment(c.comment) or markers.parse_release_comment(c.comment)
                for iid in c.instance_ids
            ),
            standby_flags=tuple(
                (c.comment, c.parameters.get("keepStandby", [None])[0])
                for c in world.base.shim.commands()
                if c.document_name != TASK_DOCUMENT
            ),
            ticks=_ticks(world.ticks()),
        )


def _ticks(held: list[dict[str, Any]]) -> dict[int, list[tuple[int, int]]]:
    ticks: dict[int, list[tuple[int, int]]] = {}
    for tick in held:
        due = int(tick["due"])
        ticks.setdefault(int(tick["release"]), []).append((due - int(tick["delay"]), due))
    return {release: sorted(sent) for release, sent in ticks.items()}


def _send_kind(comment: str) -> str:
    return "stage" if markers.parse_stage_comment(comment) else "last"


def _release_configs(commands: list[Any]) -> dict[int, set[str]]:
    sent: dict[int, set[str]] = {}
    for command in commands:
        parameters = command.parameters
        sent.setdefault(int(parameters["release"][0]), set()).add(parameters.get("releaseConfig", [""])[0])
    return sent


def _pinned_versions(encoded: str) -> dict[str, str]:
    if not encoded:
        return {}
    data = json.loads(base64.b64decode(encoded))
    return {str(s["var"]): str(s["version"]) for s in data["secrets"]}


Check = Callable[[Seen, Expect], Iterator[str]]


def pointer_is_the_desired_release(seen: Seen, expect: Expect) -> Iterator[str]:
    if seen.pointer_digest != expect.desired:
        now = f"release {seen.pointer_release} {(seen.pointer_digest or 'none')[-6:]}"
        yield f"pointer is {now}, desired {expect.desired[-6:]}"


def group_boots_the_pointers_release(seen: Seen, expect: Expect) -> Iterator[str]:
    image = seen.group_image or ""
    if seen.group_release != seen.pointer_release or not image.endswith(seen.pointer_digest or "-"):
        yield f"group boots release {seen.group_release}, pointer {seen.pointer_release}"


def every_in_service_host_runs_the_pointers_release(seen: Seen, expect: Expect) -> Iterator[str]:
    for iid, host in sorted(seen.in_service.items()):
        if host.release == seen.pointer_release and host.digest == seen.pointer_digest:
            continue
        refused = any(release == seen.pointer_release and not ok for _, _, release, ok in host.received)
        if expect.hold and refused:
            continue  # it refused the failed release and keeps what it had
        yield f"{iid[-4:]} runs release {host.release}, pointer {seen.pointer_release}"


def the_record_is_truthful(seen: Seen, expect: Expect) -> Iterator[str]:
    """The pointer's release ended as the fleet did; nothing claims SUCCEEDED or ROLLED_BACK
    where the fleet is not."""
    current = seen.releases.get(seen.pointer_release) if seen.pointer_release is not None else None
    wanted = "FAILED" if expect.hold else "SUCCEEDED"
    if current is not None and current["status"] != wanted:
        yield f"pointer's release {seen.pointer_release} is {current['status']}, not {wanted}"
    succeeded = [n for n, r in seen.releases.items() if r["status"] == "SUCCEEDED"]
    if not expect.hold and succeeded and max(succeeded) != seen.pointer_release:
        yield f"release {max(succeeded)} SUCCEEDED is newer than the pointer's {seen.pointer_release}"
    served = {h.release for h in seen.in_service.values()}
    for number, release in sorted(seen.releases.items()):
        if release["status"] == "ROLLED_BACK" and number in served:
            yield f"release {number} ROLLED_BACK while hosts serve it"


def the_lock_is_free_or_its_command_is_running(seen: Seen, expect: Expect) -> Iterator[str]:
    """A lease that ran out does not make a lock free: every deploy ends by releasing it, so an
    owner left behind is a step never taken (and after recovery every lease has run out)."""
    if not seen.lock_owner:
        return
    number = str(seen.lock_owner).rpartition("#")[2]
    release = seen.releases.get(int(number)) if number.isdigit() else None
    if release is None or release.get("command_id") not in seen.running_commands:
        status = release["status"] if release else "no such release"
        yield f"held by {seen.lock_owner} ({status}), no command running"


def every_accepted_push_ends_in_a_terminal_record(seen: Seen, expect: Expect) -> Iterator[str]:
    for number, release in sorted(seen.releases.items()):
        if release["status"] not in TERMINAL:
            yield f"release {number} left {release['status']}"
    recorded = {r["digest"] for r in seen.releases.values()}
    for digest in expect.accepted:
        if digest not in recorded:
            yield f"push of {digest[-6:]} has no release"


def nothing_is_deployed_twice(seen: Seen, expect: Expect) -> Iterator[str]:
    """No image goes to the fleet twice, and no host is sent a release it refused (no repair toward
    a failed release; an explicit promote is a new release and may send the same image)."""
    for digest, sends in sorted(seen.fleet_sends.items()):
        if sends > 1:
            yield f"{digest[-6:]} sent to the fleet {sends} times"
    for iid, host in sorted(seen.hosts.items()):
        refused: set[int] = set()
        for _, _, release, ok in host.received:
            if release in refused:
                yield f"{iid[-4:]} sent release {release} again after refusing it"
                break
            if not ok:
                refused.add(release)


def every_transition_is_notified(seen: Seen, expect: Expect) -> Iterator[str]:
    """Each release that became SUCCEEDED, FAILED or ROLLED_BACK during the flow was announced; an
    operator's rollback announces the rollback release it starts, which names the one it replaces."""
    rollbacks_started = [
        n
        for n, events in seen.notices.items()
        if "deploy_started" in events and seen.releases.get(n, {}).get("source") == "rollback"
    ]
    for number, release in sorted(seen.releases.items()):
        status = release["status"]
        if status not in NOTICES or seen.before.get(number) == status:
            continue
        if seen.notices.get(number, set()) & NOTICES[status]:
            continue
        if status == "ROLLED_BACK" and any(n > number for n in rollbacks_started):
            continue
        yield f"release {number} {status} never announced"


def the_pointers_release_runs_the_pinned_secret_versions(seen: Seen, expect: Expect) -> Iterator[str]:
    """Config flows: the pointer carries the versions pinned when the release was recorded, and
    every command of that release carried the same config (nothing went out unresolved)."""
    if expect.secret_versions is None:
        return
    pinned = _pinned_versions(seen.pointer_config)
    if pinned != expect.secret_versions:
        yield f"pointer pins {pinned}, expected {expect.secret_versions}"
    for config in sorted(seen.release_configs.get(seen.pointer_release or 0, set())):
        if config != seen.pointer_config:
            yield f"release {seen.pointer_release} was sent with {_pinned_versions(config)}"


def the_launching_instance_ends_in_service(seen: Seen, expect: Expect) -> Iterator[str]:
    if expect.launched is not None and seen.instance_states.get(expect.launched) != "InService":
        yield f"{expect.launched[-4:]} is {seen.instance_states.get(expect.launched, 'gone')}"


def the_release_task_runs_at_most_once_per_release(seen: Seen, expect: Expect) -> Iterator[str]:
    """A release's task command is sent once and run once, whatever failed or was redelivered; a
    release whose task failed never reaches the fleet."""
    for number, sends in sorted(seen.task_sends.items()):
        if sends > 1:
            yield f"release {number}'s task sent {sends} times"
    for number, runs in sorted(seen.task_runs.items()):
        if runs > 1:
            yield f"release {number}'s task ran {runs} times"
    for digest in expect.never_sent:
        if seen.fleet_sends.get(digest):
            yield f"{digest[-6:]} reached the fleet after its release task failed"


def no_host_takes_a_release_twice(seen: Seen, expect: Expect) -> Iterator[str]:
    """A staged release's stages before the last each go to hosts no earlier one took; its last
    stage (every host, to drop their standby) reaches each host once."""
    for (release, iid, kind), sends in sorted(seen.release_sends.items()):
        if sends > 1:
            yield f"{iid[-4:]} sent release {release} {sends} times ({kind} commands)"


def only_a_canary_stage_keeps_a_standby(seen: Seen, expect: Expect) -> Iterator[str]:
    """Every stage before the last carries keepStandby "true", no other swap command carries it;
    once no release is deploying (it passed, failed or was aborted), no in-service host keeps a
    standby: each runs one container of the app."""
    for comment, flag in seen.standby_flags:
        staged = markers.parse_stage_comment(comment) is not None
        if staged and flag != "true":
            yield f"stage command {comment!r} carries keepStandby {flag!r}"
        if not staged and flag is not None:
            yield f"command {comment!r} carries keepStandby {flag!r}"
    if any(r.get("status") == "DEPLOYING" for r in seen.releases.values()):
        return
    for iid, host in sorted(seen.in_service.items()):
        if host.standby is not None:
            yield f"{iid[-4:]} still keeps a standby ({host.standby[-6:]}) beside {str(host.digest)[-6:]}"


def at_most_one_tick_chain_per_baking_release(seen: Seen, expect: Expect) -> Iterator[str]:
    """A release's next stage tick is sent only once the one before was due (it arrived, or was
    lost): two ticks pending at once would be two chains, each sending its own."""
    for release, ticks in sorted(seen.ticks.items()):
        for (_, due), (sent, later_due) in itertools.pairwise(ticks):
            if sent < due:
                yield f"release {release}: a tick due at {later_due} sent at {sent}, before {due}"


CHECKS: tuple[Check, ...] = (
    pointer_is_the_desired_release,
    group_boots_the_pointers_release,
    every_in_service_host_runs_the_pointers_release,
    the_record_is_truthful,
    the_lock_is_free_or_its_command_is_running,
    every_accepted_push_ends_in_a_terminal_record,
    nothing_is_deployed_twice,
    every_transition_is_notified,
    the_pointers_release_runs_the_pinned_secret_versions,
    the_launching_instance_ends_in_service,
    the_release_task_runs_at_most_once_per_release,
    no_host_takes_a_release_twice,
    at_most_one_tick_chain_per_baking_release,
    only_a_canary_stage_keeps_a_standby,
)


def name(check: Check) -> str:
    """The check's name as the sentence it asserts."""
    words = check.__name__.replace("pointers_", "pointer's_").replace("in_service_host", "in-service_host")
    return words.replace("_", " ")


POINTER_IS_DESIRED = name(pointer_is_the_desired_release)
HOSTS_FOLLOW_POINTER = name(every_in_service_host_runs_the_pointers_release)
LOCK_FREE = name(the_lock_is_free_or_its_command_is_running)


def check(world: FaultWorld, expect: Expect, before: dict[int, str]) -> list[Violation]:
    """Every contradiction of the invariant; `before` is each release's status when the flow began."""
    seen = Seen.of(world, before)
    return [Violation(name(c), detail) for c in CHECKS for detail in c(seen, expect)]
