"""The harness observes the world, not the test's expectations: each observation can fail.

- a simulated host records the release and image of the SendCommand it received (its `release`
  and `image` parameters), whatever release the test thinks it is running;
- `assert_agree` reads the agent's boot line in the group's launch-template user data and
  compares `--release=` and `--image=` exactly with the pointer (a `--release=12` does not
  agree with release 1, as a substring test would).
"""

from __future__ import annotations

import base64

import pytest
from deployer.builders import swap_parameters, user_data
from moto.ec2.models import ec2_backends

from tests.conftest import ACCOUNT, REGION
from tests.lifecycle.conftest import DOCUMENT, World, assert_boots, boot_flags, digest_of

pytestmark = pytest.mark.unit


def test_a_host_records_the_release_its_command_carries_not_the_one_the_test_expects(world: World) -> None:
    # Given release 1 live and release 2 deploying: the test expects the hosts to run release 2
    world.complete(world.push(1, "v1"))
    expected = world.push(2, "v2")
    # but the command the hosts receive carries release 3 (another image)
    carried = expected.model_copy(
        update={
            "release": 3,
            "digest": digest_of(3),
            "image": expected.image.replace(expected.digest, digest_of(3)),
        }
    )
    command_id = world.core.fleet.send_swap_to_instances(
        world.config, world.instances, swap_parameters(world.config, carried), "test"
    )

    # When the hosts run that command, named through the release the test expects
    world.run_command(expected.model_copy(update={"command_id": command_id}))

    # Then every host records release 3 and its image, from the command's parameters
    assert {(h.release, h.image) for h in world.hosts.values()} == {(3, carried.image)}
    assert set(world.running.values()) == {digest_of(3)}
    assert all(h.received[-1] == (command_id, digest_of(3), 3, True) for h in world.hosts.values())
    # and the world does not agree: the pointer names another release than the hosts serve
    with pytest.raises(AssertionError, match="hosts serve"):
        world.assert_agree()


def test_the_boot_line_is_parsed_and_compared_exactly(world: World) -> None:
    # Given the user data the builder writes for release 12 of release 1's image
    first = world.push(1, "v1")
    twelve = first.model_copy(update={"release": 12})
    script = user_data(world.config, twelve, DOCUMENT, "/deployer/web/release", REGION)

    # Then the boot line says exactly release 12 and that image
    assert (boot_flags(script)["release"], boot_flags(script)["image"]) == ("12", first.image)
    assert str(first.release) in script  # what the old substring test accepted for release 1
    assert_boots(script, 12, first.image)
    # and it agrees neither with release 1 nor with another image
    with pytest.raises(AssertionError, match="boots"):
        assert_boots(script, 1, first.image)
    with pytest.raises(AssertionError, match="boots"):
        assert_boots(script, 12, first.image.replace(first.digest, digest_of(2)))
    # and a user data without a boot line boots nothing
    with pytest.raises(AssertionError, match="boots"):
        assert_boots("#!/bin/sh\necho release 12\n", 12, first.image)


def test_a_group_version_whose_user_data_boots_another_release_does_not_agree(world: World) -> None:
    # Given release 1 live, and the world agreeing
    world.complete(world.push(1, "v1"))
    release = world.assert_agree()
    # When the group's launch-template version (the one the pointer's release names) is made to
    # boot release 12 of the same image, in place
    group = world.core.launch_templates.current(world.config)
    script = world.core.launch_templates.user_data(group.template_id, group.version) or ""
    assert boot_flags(script)["release"] == "1"
    twelve = script.replace("--release=1 ", "--release=12 ")
    assert boot_flags(twelve)["release"] == "12"
    template = ec2_backends[ACCOUNT][REGION].launch_templates[group.template_id]
    template.versions[group.version - 1].data["UserData"] = base64.b64encode(twelve.encode()).decode()

    # Then the world no longer agrees, though the version number still matches the release's
    assert world.core.launch_templates.current(world.config).version == release.launch_template_version
    with pytest.raises(AssertionError, match="boots"):
        world.assert_agree()
