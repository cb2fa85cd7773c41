"""Config and secrets pinned per release, in moto: a push pins each secret's current version
(never its value) into the release, the swap command and the pointer; a secret that cannot be
described records the release FAILED and deploys nothing; a rollback carries its target's
versions, not the current ones."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from deployer import cli as deployer_cli
from deployer.admission import accept_push
from deployer.entry.events import handle_operation
from deployer.errors import DeployerError
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event
from deployer.models.records import ReleaseStatus

from tests.lifecycle.conftest import World, client

pytestmark = pytest.mark.integration

SSM_VALUE = "ssm-value-9f1c"
SECRET_VALUE = "sm-value-77ab"


def with_secrets(world: World, **extra: Any) -> None:
    """The app names one parameter and one secret (both exist) besides a plain variable."""
    client("ssm").put_parameter(Name="/web/db-password", Value=SSM_VALUE, Type="SecureString")
    client("secretsmanager").create_secret(Name="web/api-key", SecretString=SECRET_VALUE)
    document = {
        **world.config.to_document(),
        "environment": {"LOG_LEVEL": "info"},
        "secrets": {"DB_PASSWORD": "ssm:/web/db-password", "API_KEY": "secretsmanager:web/api-key"},
        **extra,
    }
    world.config = AppConfig.parse(document)
    world.core.apps.put(world.config)


def new_versions() -> str:
    """A new value of both (parameter version 2, a new AWSCURRENT secret version); the secret's
    new VersionId as Secrets Manager reports it."""
    client("ssm").put_parameter(
        Name="/web/db-password", Value=SSM_VALUE + "2", Type="SecureString", Overwrite=True
    )
    client("secretsmanager").put_secret_value(SecretId="web/api-key", SecretString=SECRET_VALUE + "2")
    return current_secret_version()


def current_secret_version() -> str:
    stages = client("secretsmanager").describe_secret(SecretId="web/api-key")["VersionIdsToStages"]
    (current,) = [v for v, labels in stages.items() if "AWSCURRENT" in labels]
    return str(current)


def sent_config(world: World, command_id: str | None) -> dict[str, Any]:
    """The releaseConfig the swap command carried, decoded as the agent decodes it."""
    assert command_id
    (value,) = world.shim.find(command_id).parameters["releaseConfig"]
    data: dict[str, Any] = json.loads(base64.b64decode(value))
    return data


def pinned(data: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {s["var"]: (s["from"], s["id"], s["version"]) for s in data["secrets"]}


def pointer_document() -> dict[str, Any]:
    value = client("ssm").get_parameter(Name="/deployer/web/release")["Parameter"]["Value"]
    data: dict[str, Any] = json.loads(value)
    return data


def stored_release_items() -> str:
    items = client("dynamodb").scan(TableName="ReleasesTable")["Items"]
    return json.dumps(items)


def test_a_push_pins_each_secrets_current_version_into_release_command_and_pointer(world: World) -> None:
    # Given an app with a variable, a parameter at version 1 and a secret
    with_secrets(world)
    version = current_secret_version()

    # When an image is pushed
    release = world.push(1, "v1")

    # Then the swap command carries the variable and both pinned versions
    sent = sent_config(world, release.command_id)
    assert sent["v"] == 1
    assert sent["environment"] == {"LOG_LEVEL": "info"}
    assert pinned(sent) == {
        "API_KEY": ("secretsmanager", "web/api-key", version),
        "DB_PASSWORD": ("ssm", "/web/db-password", "1"),
    }
    # And the stored release and the pointer hold the same config
    assert release.config.secret_versions() == {"API_KEY": version, "DB_PASSWORD": "1"}
    (value,) = world.shim.find(release.command_id).parameters["releaseConfig"]
    assert pointer_document()["release_config"] == value
    # And no secret value is anywhere the control plane wrote
    written = (
        stored_release_items()
        + json.dumps(pointer_document())
        + json.dumps(world.shim.find(release.command_id).parameters)
    )
    assert SSM_VALUE not in written
    assert SECRET_VALUE not in written


def test_a_later_push_pins_the_new_versions(world: World) -> None:
    # Given release 1 live with the first versions
    with_secrets(world)
    world.complete(world.push(1, "v1"))

    # When both secrets change and the next image is pushed
    version = new_versions()
    second = world.push(2, "v2")

    # Then release 2 runs with the new versions
    assert pinned(sent_config(world, second.command_id)) == {
        "API_KEY": ("secretsmanager", "web/api-key", version),
        "DB_PASSWORD": ("ssm", "/web/db-password", "2"),
    }


def test_an_automatic_rollback_carries_the_targets_versions_not_the_current_ones(world: World) -> None:
    # Given release 1 live with the first versions, then new versions and release 2
    with_secrets(world)
    first = world.push(1, "v1")
    world.complete(first)
    first_sent = sent_config(world, world.release(1).command_id)
    new_versions()
    second = world.push(2, "v2")

    # When release 2 fails and is rolled back
    answer = world.complete(second, failures={world.instances[0]: "health"})

    # Then the rollback release sends exactly release 1's config
    rollback = world.release(answer["rollback_release"])
    assert sent_config(world, rollback.command_id) == first_sent
    assert rollback.config == world.release(1).config
    assert (
        pointer_document()["release_config"]
        == world.shim.find(rollback.command_id).parameters["releaseConfig"][0]
    )


def test_an_operator_rollback_carries_the_targets_versions(world: World) -> None:
    # Given release 1 and then, with new versions, release 2 live
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    first_sent = sent_config(world, world.release(1).command_id)
    new_versions()
    world.complete(world.push(2, "v2"))

    # When an operator rolls back
    answer = handle_operation(world.ld, {"action": "rollback", "app": "web"})

    # Then the rollback sends release 1's versions
    assert sent_config(world, world.release(answer["release"]).command_id) == first_sent


def test_a_push_naming_a_missing_secret_is_recorded_failed_and_deploys_nothing(world: World) -> None:
    # Given the app names a secret that does not exist
    with_secrets(world)
    world.config = AppConfig.parse(
        {**world.config.to_document(), "secrets": {"API_KEY": "secretsmanager:web/missing"}}
    )
    world.core.apps.put(world.config)
    digest = world.image(1, "v1")
    event = world.push_event(digest, "v1")

    # When the push arrives, and arrives again
    first = accept_push(world.core, parse_push_event(event)).results[0]
    again = accept_push(world.core, parse_push_event(event)).results[0]

    # Then one release is recorded FAILED, naming the variable and the reference
    assert first.action.value == "failed"
    assert again.release == first.release == 1
    release = world.release(1)
    assert release.status is ReleaseStatus.FAILED
    assert "secret API_KEY (secretsmanager:web/missing)" in release.status_reason
    # And nothing deployed: no command, no pointer, the app is free
    assert world.shim.commands() == []
    with pytest.raises(client("ssm").exceptions.ParameterNotFound):
        client("ssm").get_parameter(Name="/deployer/web/release")
    state = world.core.state.get("web")
    assert (state.lock_owner, state.desired, state.last_release) == (None, None, 1)


def test_an_operator_deploy_naming_a_missing_parameter_is_refused_and_writes_nothing(world: World) -> None:
    # Given release 1 live, then the app's parameter is deleted
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    client("ssm").delete_parameter(Name="/web/db-password")
    world.image(2, "v2")

    # When an operator deploys tag v2
    with pytest.raises(DeployerError, match="secret DB_PASSWORD"):
        handle_operation(world.ld, {"action": "promote", "app": "web", "to": "v2"})

    # Then no release was recorded
    assert world.core.state.get("web").last_release == 1


# ------------------------------------------------------------------ config-only releases
def cli(world: World, *argv: str) -> tuple[int, Any, str]:
    """The CLI with --json against the world: (exit code, parsed stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = deployer_cli.main([*argv, "--json"], deps=world.core, out=out, err=err, sleep=lambda _s: None)
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def test_config_set_stores_the_variable_and_releases_it_with_the_running_image(world: World) -> None:
    # Given release 1 live with LOG_LEVEL=info
    with_secrets(world)
    first = world.push(1, "v1")
    world.complete(first)

    # When an operator sets LOG_LEVEL and adds a variable
    code, answer, err = cli(world, "config", "set", "web", "LOG_LEVEL=debug", "FEATURE_X=on")

    # Then the stored config has them, and release 2 runs release 1's image with them
    assert (code, err) == (0, "")
    assert world.core.apps.get("web").environment == {"LOG_LEVEL": "debug", "FEATURE_X": "on"}
    second = world.release(answer["release"])
    assert (second.release, second.digest, second.image) == (2, first.digest, first.image)
    sent = sent_config(world, second.command_id)
    assert sent["environment"] == {"FEATURE_X": "on", "LOG_LEVEL": "debug"}
    assert pinned(sent) == pinned(sent_config(world, world.release(1).command_id))


def test_a_config_only_release_that_fails_rolls_back_to_the_previous_config(world: World) -> None:
    # Given release 1 live, then a config-only release 2 with new secret versions
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    first_sent = sent_config(world, world.release(1).command_id)
    new_versions()
    code, answer, _ = cli(world, "deploy", "web", "--config-only")
    assert code == 0
    second = world.release(answer["release"])
    assert pinned(sent_config(world, second.command_id)) != pinned(first_sent)

    # When it fails its health check on a host
    rolled = world.complete(second, failures={world.instances[1]: "health"})

    # Then the rollback sends release 1's config again, same image
    rollback = world.release(rolled["rollback_release"])
    assert rollback.digest == second.digest
    assert sent_config(world, rollback.command_id) == first_sent


def test_config_set_with_a_bad_name_or_value_names_it_and_changes_nothing(world: World) -> None:
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    code, _, err = cli(world, "config", "set", "web", "BAD-NAME=x")
    assert code != 0
    assert "environment.BAD-NAME" in err
    assert world.core.apps.get("web").environment == {"LOG_LEVEL": "info"}
    assert world.core.state.get("web").last_release == 1


def test_config_put_releases_a_changed_environment_and_not_an_unchanged_one(
    world: World, tmp_path: Path
) -> None:
    # Given release 1 live
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    path = tmp_path / "web.json"

    # When the same config is put, then one with another variable (first with --no-deploy)
    path.write_text(json.dumps(world.config.to_document()))
    same = cli(world, "config", "put", str(path))
    path.write_text(json.dumps({**world.config.to_document(), "environment": {"LOG_LEVEL": "warn"}}))
    held = cli(world, "config", "put", str(path), "--no-deploy")
    released = cli(world, "config", "put", str(path), "--wait")  # stored again: same as stored now

    # Then only a change of what a release runs starts one
    assert (same[0], same[1]["stored"], "release" in same[1]) == (0, True, False)
    assert (held[0], held[1]["release"]) == (0, None)
    assert "release" not in released[1]
    assert world.core.state.get("web").last_release == 1
    path.write_text(json.dumps({**world.config.to_document(), "environment": {"LOG_LEVEL": "error"}}))
    code, answer, _ = cli(world, "config", "put", str(path))
    assert (code, answer["release"]) == (0, 2)
    assert sent_config(world, world.release(2).command_id)["environment"] == {"LOG_LEVEL": "error"}


# ------------------------------------------------------------------ history
def test_history_shows_what_each_release_changed_and_never_a_value(world: World) -> None:
    # Given release 1 (a push), release 2 (a variable set, one added), release 3 (new secret
    # versions, config-only) and release 4 (a new image)
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    old_secret = current_secret_version()
    cli(world, "config", "set", "web", "LOG_LEVEL=debug", "FEATURE_X=on")
    world.complete(world.release(2))
    new_secret = new_versions()
    cli(world, "deploy", "web", "--config-only")
    world.complete(world.release(3))
    world.complete(world.push(4, "v4"))

    # When an operator reads the history
    code, rows, err = cli(world, "history", "web")
    out = io.StringIO()
    text_code = deployer_cli.main(["history", "web"], deps=world.core, out=out, err=io.StringIO())

    # Then each release says what changed against the release before it
    assert (code, err, text_code) == (0, "", 0)
    changes = {row["release"]: row["changes"] for row in rows}
    assert changes[1]["image"] == "first"
    assert (changes[2]["image"], changes[2]["variables"]) == (
        "same",
        {"added": ["FEATURE_X"], "changed": ["LOG_LEVEL"], "removed": []},
    )
    assert changes[2]["secrets"] == []
    assert changes[3]["image"] == "same"
    assert [(s["var"], s["from"], s["to"]) for s in changes[3]["secrets"]] == [
        ("API_KEY", old_secret, new_secret),
        ("DB_PASSWORD", "1", "2"),
    ]
    assert (changes[4]["image"], changes[4]["secrets"]) == ("changed", [])
    # And no secret value appears, in JSON or in the table
    shown = json.dumps(rows) + out.getvalue()
    for value in (SSM_VALUE, SECRET_VALUE, SSM_VALUE + "2", SECRET_VALUE + "2"):
        assert value not in shown
    assert "DB_PASSWORD 1->2" in out.getvalue()


def test_status_shows_what_the_current_release_changed(world: World) -> None:
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    cli(world, "config", "unset", "web", "LOG_LEVEL")
    world.complete(world.release(2))
    code, view, _ = cli(world, "status", "web")
    assert code == 0
    assert view["current"]["changes"]["variables"]["removed"] == ["LOG_LEVEL"]
    assert view["current"]["changes"]["image"] == "same"


def test_config_set_before_any_release_stores_only(world: World) -> None:
    with_secrets(world)
    code, answer, _ = cli(world, "config", "set", "web", "LOG_LEVEL=debug")
    assert (code, answer["release"]) == (0, None)
    assert world.core.apps.get("web").environment == {"LOG_LEVEL": "debug"}
    assert world.core.state.get("web").last_release == 0


def test_config_set_while_a_deploy_runs_stores_and_says_no_release_started(world: World) -> None:
    # Given release 1 still deploying
    with_secrets(world)
    world.push(1, "v1")
    # When a variable is set
    code, answer, _ = cli(world, "config", "set", "web", "LOG_LEVEL=debug")
    # Then it is stored, no release started, and the answer says why (exit 1)
    assert code == 1
    assert answer["release"] is None
    assert "is deploying" in answer["error"]
    assert world.core.apps.get("web").environment == {"LOG_LEVEL": "debug"}
    assert world.core.state.get("web").last_release == 1


def test_promoting_an_earlier_release_number_runs_its_pinned_config(world: World) -> None:
    # Given release 1, then (new versions) release 2 live
    with_secrets(world)
    world.complete(world.push(1, "v1"))
    first_sent = sent_config(world, world.release(1).command_id)
    new_versions()
    world.complete(world.push(2, "v2"))
    # When an operator deploys release 1 again by number
    answer = handle_operation(world.ld, {"action": "promote", "app": "web", "to": 1})
    # Then it runs as release 1 ran: its image and its versions
    assert sent_config(world, world.release(answer["release"]).command_id) == first_sent
