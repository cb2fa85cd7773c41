"""The host agent against a real Docker engine, nginx, nftables and registry."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from localcloud.hosts.images import AppImage
from localcloud.hosts.registry import Registry
from localcloud.hosts.sandbox import HostSandbox
from tests.host.helpers import APP, body, container_id, image_present, swap

pytestmark = pytest.mark.integration

Publish = Callable[..., AppImage]

TIMING_KEYS = {"lock", "config", "pull", "start", "health", "switch", "drain", "cleanup", "total"}


def site_file(host: HostSandbox) -> Path:
    return Path(host.config["nginx_conf_dir"]) / f"deployer-{APP}.conf"


def nft_rules(host: HostSandbox) -> str:
    proc = subprocess.run(["nft", "list", "table", "ip", host.config["nft_table"]],
                          capture_output=True, text=True, check=False)
    return proc.stdout


def test_first_boot_installs_the_site_and_the_switch_and_serves_the_release(
        host: HostSandbox, publish: Publish) -> None:
    # Given a fresh host with no site, no traffic rule and no container
    image = publish(1)
    assert not site_file(host).exists()
    # When the boot mode runs
    code, summary, _ = swap(host, image, mode="boot")
    # Then release 1 serves through nginx, and the summary, state and rule say so
    assert code == 0, summary
    assert summary["outcome"] == "live"
    assert summary["failure_class"] == "none"
    assert summary["release"] == 1
    assert summary["digest"] == image.digest
    assert set(summary["timings"]) == TIMING_KEYS
    assert "_extra_stdout_lines" not in summary, "stdout must be exactly one line"
    assert host.get("/") == (200, body(1))
    assert site_file(host).exists()
    assert f"dnat to 127.0.0.1:{host.config['blue_port']}" in nft_rules(host)
    state = host.state(APP)
    assert state is not None
    assert state["release"] == 1
    assert state["colour"] == "blue"
    assert host.containers() == [f"{host.host_id}-{APP}-blue"]


def test_a_deploy_switches_to_the_new_release_and_removes_the_old_container(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live
    first, second = publish(1), publish(2)
    assert swap(host, first, mode="boot")[0] == 0
    # When release 2 is deployed
    code, summary, _ = swap(host, second)
    # Then release 2 serves from the other colour and only its container remains
    assert code == 0, summary
    assert summary["previous_release"] == 1
    assert host.get("/") == (200, body(2))
    assert host.containers() == [f"{host.host_id}-{APP}-green"]
    assert host.containers(all_states=True) == [f"{host.host_id}-{APP}-green"]
    labels = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Labels}}",
                             f"{host.host_id}-{APP}-green"], capture_output=True, text=True,
                            check=True).stdout
    assert '"deployer.release":"2"' in labels
    assert second.digest in labels


def test_a_failed_stop_of_the_old_container_is_a_warning_and_exits_0_with_the_new_release_live(
        make_host: Callable[..., HostSandbox], publish: Publish, tmp_path: Path) -> None:
    # Given a host whose docker refuses to stop containers, with release 1 live
    docker = tmp_path / "docker-that-cannot-stop"
    docker.write_text('#!/bin/sh\n'
                      'if [ "$1" = stop ]; then\n'
                      '  echo "Error response from daemon: cannot stop" >&2; exit 1\n'
                      'fi\n'
                      'exec docker "$@"\n')
    docker.chmod(0o755)
    host = make_host(docker_command=[str(docker)])
    first, second = publish(1), publish(2)
    assert swap(host, first, mode="boot")[0] == 0
    # When release 2 is deployed and the old container cannot be stopped
    code, summary, _ = swap(host, second)
    # Then the agent exits 0 (SSM Success: never counted toward MaxErrors), reports the new
    # release live with a cleanup warning, and release 2 serves
    assert code == 0, summary
    assert summary["outcome"] == "live"
    assert summary["failure_class"] == "none"
    assert summary["warning"] == "cleanup"
    assert summary["exit_code"] == 0
    assert "cannot stop" in summary["message"]
    assert host.get("/") == (200, body(2))


def test_the_same_release_again_is_a_no_op(host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live
    image = publish(1)
    assert swap(host, image)[0] == 0
    before = container_id(f"{host.host_id}-{APP}-blue")
    # When release 1 is deployed again
    code, summary, _ = swap(host, image)
    # Then nothing is pulled or started, and the same container serves
    assert code == 0, summary
    assert summary["outcome"] == "already_live"
    assert summary["pull_attempts"] == 0
    assert container_id(f"{host.host_id}-{APP}-blue") == before
    assert host.get("/") == (200, body(1))


def test_a_new_release_number_for_the_image_already_serving_is_recorded_without_a_swap(
        host: HostSandbox, publish: Publish, registry: Registry) -> None:
    # Given release 1 live (the host never took a later release that failed elsewhere)
    first = publish(1)
    assert swap(host, first)[0] == 0
    before = container_id(f"{host.host_id}-{APP}-blue")
    registry.stop()
    # When the rollback release 3, carrying release 1's image, reaches the host
    code, summary, _ = host.run_agent("swap", host.swap_args(APP, first.reference, 3))
    # Then nothing is pulled, started or switched; release 3 is recorded in the summary and the state
    assert code == 0, summary
    assert summary["outcome"] == "already_live"
    assert summary["release"] == 3
    assert summary["previous_release"] == 1
    assert summary["pull_attempts"] == 0
    assert summary["timings"]["start"] == 0.0
    assert container_id(f"{host.host_id}-{APP}-blue") == before
    assert host.get("/") == (200, body(1))
    state = host.state(APP)
    assert state is not None
    assert (state["release"], state["digest"]) == (3, first.digest)
    assert [e["release"] for e in state["retained"]] == [3]


def test_a_rollback_release_after_a_renumbering_swaps_and_keeps_the_renumbered_image(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live and then recorded again as release 3 (a rollback that found it serving)
    first, second = publish(1), publish(2)
    assert swap(host, first)[0] == 0
    assert host.run_agent("swap", host.swap_args(APP, first.reference, 3))[1]["outcome"] == "already_live"
    # When release 4 (a new image) is deployed
    code, summary, _ = host.run_agent("swap", host.swap_args(APP, second.reference, 4))
    # Then it swaps, names release 3 as the previous one and keeps its image as the rollback target
    assert code == 0, summary
    assert summary["outcome"] == "live"
    assert summary["previous_release"] == 3
    assert host.get("/") == (200, body(2))
    assert image_present(first.reference)
    state = host.state(APP)
    assert state is not None
    assert (state["previous_release"], state["previous_digest"]) == (3, first.digest)


def test_rollback_to_a_retained_release_works_with_the_registry_stopped(
        host: HostSandbox, publish: Publish, registry: Registry) -> None:
    # Given release 1 then release 2 deployed, and the registry gone
    first, second = publish(1), publish(2)
    assert swap(host, first)[0] == 0
    assert swap(host, second)[0] == 0
    registry.stop()
    # When the host is rolled back to release 1
    code, summary, _ = swap(host, first)
    # Then it serves release 1 from the retained image, without any pull
    assert code == 0, summary
    assert summary["pull_attempts"] == 0
    assert host.get("/") == (200, body(1))


def test_a_broken_image_fails_the_health_gate_and_the_old_release_keeps_serving(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live and a release 2 whose health endpoint fails
    good, broken = publish(1), publish(2, kind="broken")
    assert swap(host, good)[0] == 0
    # When release 2 is deployed with a short health timeout
    code, summary, _ = swap(host, broken, health_timeout=3)
    # Then the health class is reported with the app's last log lines, and release 1 serves
    assert code == 6
    assert summary["failure_class"] == "health"
    assert summary["outcome"] == "failed"
    assert any("broken: health endpoint is missing" in line for line in summary["log_tail"])
    assert "404" in summary["message"]
    assert host.get("/") == (200, body(1))
    assert host.containers(all_states=True) == [f"{host.host_id}-{APP}-blue"]
    state = host.state(APP)
    assert state is not None
    assert state["release"] == 1


def test_an_image_that_crashes_at_start_is_a_start_failure_and_changes_nothing(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live and a release 2 that exits at once
    good, crash = publish(1), publish(2, kind="crash")
    assert swap(host, good)[0] == 0
    # When release 2 is deployed
    code, summary, _ = swap(host, crash)
    # Then the start class, the exit status and the logs are reported; release 1 serves
    assert code == 5, summary
    assert summary["failure_class"] == "start"
    assert summary["container_exit"] == 3
    assert any("fatal: configuration missing" in line for line in summary["log_tail"])
    assert host.get("/") == (200, body(1))
    assert host.containers(all_states=True) == [f"{host.host_id}-{APP}-blue"]


def test_a_slow_starter_becomes_live_within_its_health_timeout(host: HostSandbox, publish: Publish) -> None:
    # Given an app that needs two seconds before it listens
    slow = publish(1, kind="slow", slow_seconds=2)
    # When it is deployed with a timeout longer than that
    code, summary, _ = swap(host, slow, health_timeout=20)
    # Then it goes live, and the health phase took at least its warm-up
    assert code == 0, summary
    assert summary["timings"]["health"] >= 2
    assert host.get("/") == (200, body(1))


def test_a_stopped_registry_is_a_pull_failure_after_retries_and_changes_nothing(
        make_host: Callable[..., HostSandbox], publish: Publish, registry: Registry) -> None:
    # Given release 1 live and the registry down when release 2 is pulled
    host = make_host(pull_attempts=3, pull_backoff=0.1)
    first, second = publish(1), publish(2)
    assert swap(host, first)[0] == 0
    registry.stop()
    # When release 2 is deployed
    code, summary, stderr = swap(host, second)
    # Then every attempt is visible, the pull class is reported, and release 1 serves
    assert code == 4, summary
    assert summary["failure_class"] == "pull"
    assert summary["pull_attempts"] == 3
    assert stderr.count("retrying in") == 2
    assert "connection refused" in summary["message"]
    assert host.get("/") == (200, body(1))
    assert host.containers(all_states=True) == [f"{host.host_id}-{APP}-blue"]
    state = host.state(APP)
    assert state is not None
    assert state["release"] == 1


def test_a_registry_answering_5xx_is_retried_until_the_pull_succeeds(
        make_host: Callable[..., HostSandbox], publish: Publish, registry: Registry) -> None:
    # Given a registry that answers 503 to the next requests
    host = make_host(pull_attempts=6, pull_backoff=0.1)
    image = publish(1)
    registry.fail_next(3)
    # When the release is deployed
    code, summary, stderr = swap(host, image)
    # Then the agent retried with backoff and went live
    assert code == 0, summary
    assert summary["pull_attempts"] >= 2
    assert "503" in stderr
    assert "retrying in" in stderr
    assert registry.failures_served == 3
    assert host.get("/") == (200, body(1))


def test_a_registry_answering_5xx_for_good_is_a_pull_failure_and_changes_nothing(
        make_host: Callable[..., HostSandbox], publish: Publish, registry: Registry) -> None:
    # Given release 1 live and a registry that now answers 503 to everything
    host = make_host(pull_attempts=3, pull_backoff=0.1)
    first, second = publish(1), publish(2)
    assert swap(host, first)[0] == 0
    registry.fail_always()
    # When release 2 is deployed
    code, summary, _ = swap(host, second)
    # Then the pull class is reported after every attempt, and release 1 still serves
    assert code == 4, summary
    assert summary["pull_attempts"] == 3
    assert "503" in summary["message"]
    assert host.get("/") == (200, body(1))
    assert not image_present(second.reference)


def test_an_nginx_config_that_fails_nginx_t_is_never_reloaded(host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live, then the site removed and a broken file in nginx's config directory
    image = publish(1)
    assert swap(host, image, mode="boot")[0] == 0
    pid = host.nginx_pid()
    site_file(host).unlink()
    broken = Path(host.config["nginx_conf_dir"]) / "00-broken.conf"
    broken.write_text("this is not an nginx directive;\n")
    # When boot runs again and must reinstall the site
    code, summary, _ = swap(host, image, mode="boot")
    # Then nginx -t's complaint is reported, nothing was reloaded, and release 1 still serves
    assert code == 7, summary
    assert summary["failure_class"] == "switch"
    assert any("00-broken.conf" in line for line in summary["log_tail"])
    assert not site_file(host).exists()
    assert host.nginx_pid() == pid
    assert host.get("/") == (200, body(1))


def test_two_concurrent_invocations_are_serialised_by_the_host_lock(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live
    first, second, third = publish(1), publish(2), publish(3)
    assert swap(host, first)[0] == 0
    # When releases 2 and 3 are deployed at the same moment
    procs = [host.start_agent("swap", host.swap_args(APP, img.reference, img.release))
             for img in (second, third)]
    results = [host.finish_agent(proc) for proc in procs]
    # Then both succeed one after the other: the later one waited for the whole earlier run
    assert [code for code, _, _ in results] == [0, 0], results
    summaries = sorted((r[1] for r in results), key=lambda s: s["timings"]["lock"])
    earlier, later = summaries
    assert later["timings"]["lock"] >= earlier["timings"]["total"] - earlier["timings"]["lock"] - 0.5
    assert later["previous_release"] == earlier["release"]
    assert host.get("/") == (200, body(later["release"]))
    assert len(host.containers(all_states=True)) == 1


def test_a_lock_held_past_the_timeout_is_a_lock_failure_and_changes_nothing(
        make_host: Callable[..., HostSandbox], publish: Publish) -> None:
    # Given another process holding the app's host lock
    host = make_host(lock_timeout=1)
    image = publish(1)
    lock_path = Path(host.config["state_dir"]) / APP / "agent.lock"
    lock_path.parent.mkdir(parents=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # When the agent runs
        code, summary, _ = swap(host, image)
    finally:
        os.close(fd)
    # Then it gives up with the lock class and starts nothing
    assert code == 3, summary
    assert summary["failure_class"] == "lock"
    assert host.containers(all_states=True) == []


def test_retention_keeps_the_last_n_release_images_and_prunes_older_ones(
        host: HostSandbox, publish: Publish) -> None:
    # Given four releases deployed in turn with retain=2
    images = [publish(n) for n in (1, 2, 3, 4)]
    for image in images:
        code, summary, _ = swap(host, image, retain=2)
        assert code == 0, summary
    # Then the images of releases 3 and 4 stay, those of 1 and 2 are gone
    assert [image_present(i.reference) for i in images] == [False, False, True, True]
    state = host.state(APP)
    assert state is not None
    assert [entry["release"] for entry in state["retained"]] == [3, 4]


def test_retention_never_prunes_the_rollback_target(host: HostSandbox, publish: Publish) -> None:
    # Given retain=1 and release 1 then release 2 deployed
    first, second, third = publish(1), publish(2), publish(3)
    assert swap(host, first, retain=1)[0] == 0
    assert swap(host, second, retain=1)[0] == 0
    # Then release 1's image stays: it is what a rollback would boot
    assert image_present(first.reference)
    # When release 3 is deployed, release 2 becomes the rollback target and release 1 goes
    assert swap(host, third, retain=1)[0] == 0
    assert [image_present(i.reference) for i in (first, second, third)] == [False, True, True]


def test_boot_after_a_reboot_restores_the_traffic_rule_for_the_live_release(
        host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live, then the nft table lost (as after a reboot)
    image = publish(1)
    assert swap(host, image, mode="boot")[0] == 0
    subprocess.run(["nft", "delete", "table", "ip", host.config["nft_table"]], check=True)
    assert host.get("/")[0] == 502
    # When boot runs with the same release
    code, summary, _ = swap(host, image, mode="boot")
    # Then the running container is kept and traffic reaches it again
    assert code == 0, summary
    assert summary["outcome"] == "already_live"
    assert host.get("/") == (200, body(1))


def test_status_prints_the_host_state_as_one_json_line(host: HostSandbox, publish: Publish) -> None:
    # Given release 1 live
    image = publish(1)
    assert swap(host, image)[0] == 0
    # When the status mode runs
    code, status, _ = host.run_agent("status", [f"--app={APP}"])
    # Then it reports the live release and where traffic goes
    assert code == 0
    assert status["apps"][APP]["release"] == 1
    assert status["dnat_port"] == host.config["blue_port"]


def test_rerunning_boot_without_a_readable_pointer_never_downgrades_the_live_release(
        host: HostSandbox, publish: Publish) -> None:
    # Given a host that booted release 1 and was then deployed release 2
    first, second = publish(1), publish(2)
    assert swap(host, first, mode="boot")[0] == 0
    assert swap(host, second)[0] == 0
    # When the boot command baked with release 1 runs again (as after a reboot), with no pointer
    code, summary, _ = swap(host, first, mode="boot")
    # Then release 2 stays live
    assert code == 0, summary
    assert summary["outcome"] == "already_live"
    assert summary["release"] == 2
    assert "kept over baked release 1" in summary["message"]
    assert host.get("/") == (200, body(2))


def test_boot_installs_a_systemd_unit_that_reruns_the_same_boot_after_a_reboot(
        make_host: Callable[..., HostSandbox], publish: Publish, tmp_path: Path) -> None:
    # Given a host with a unit directory and a systemctl that records its calls
    record = tmp_path / "systemctl.log"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    systemctl.chmod(0o755)
    units = tmp_path / "units"
    host = make_host(systemd_unit_dir=str(units), systemctl_command=[str(systemctl)])
    image = publish(1)
    # When it boots
    code, summary, _ = swap(host, image, mode="boot", docker_options="--memory=64m --cpus=0.5")
    # Then a oneshot unit re-runs this very boot command, and it was enabled
    assert code == 0, summary
    unit = (units / f"deployer-{APP}-boot.service").read_text()
    assert "Type=oneshot" in unit
    assert f"Environment=DEPLOYER_HOST_CONFIG={host.config_path}" in unit
    assert " boot " in unit
    assert f'"--image={image.reference}"' in unit
    assert '"--docker-options=--memory=64m --cpus=0.5"' in unit
    # and the proxy's unit got the drop-in that restarts it whenever it dies
    drop_in = (units / "nginx.service.d" / "deployer-restart.conf").read_text()
    assert "Restart=always" in drop_in
    assert "KillMode=control-group" in drop_in
    # and the app's meter runs as a service restarted whenever it dies
    meter = (units / f"deployer-meter-{APP}.service").read_text()
    assert f'meter "--app={APP}"\n' in meter
    assert "Restart=always" in meter
    assert f"Environment=DEPLOYER_HOST_CONFIG={host.config_path}" in meter
    assert record.read_text().splitlines() == ["daemon-reload", "daemon-reload",
                                               f"enable deployer-{APP}-boot.service",
                                               "daemon-reload", f"enable deployer-meter-{APP}.service",
                                               f"restart deployer-meter-{APP}.service"]


def test_a_swap_on_a_host_booted_without_a_meter_installs_it_once(
        make_host: Callable[..., HostSandbox], publish: Publish, tmp_path: Path) -> None:
    # Given a host with a unit directory, whose boot (an older agent's) installed no meter unit
    record = tmp_path / "systemctl.log"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    systemctl.chmod(0o755)
    units = tmp_path / "units"
    host = make_host(systemd_unit_dir=str(units), systemctl_command=[str(systemctl)])
    # When release 1 and then release 2 are swapped in (no boot)
    assert swap(host, publish(1))[0] == 0
    assert swap(host, publish(2))[0] == 0
    # Then the first swap installed and started the meter, and the second left it alone
    assert f'meter "--app={APP}"\n' in (units / f"deployer-meter-{APP}.service").read_text()
    meter_calls = [line for line in record.read_text().splitlines() if "deployer-meter" in line]
    assert meter_calls == [f"enable deployer-meter-{APP}.service", f"restart deployer-meter-{APP}.service"]


def test_rerunning_a_swap_that_left_the_old_container_behind_removes_it(
        make_host: Callable[..., HostSandbox], publish: Publish, tmp_path: Path) -> None:
    # Given release 2 live beside release 1's container, which a docker that could not stop
    # containers left running (the run ended with the cleanup warning)
    docker = tmp_path / "docker-that-cannot-stop"
    docker.write_text('#!/bin/sh\n'
                      'if [ "$1" = stop ]; then\n'
                      '  echo "Error response from daemon: cannot stop" >&2; exit 1\n'
                      'fi\n'
                      'exec docker "$@"\n')
    docker.chmod(0o755)
    host = make_host(docker_command=[str(docker)])
    first, second = publish(1), publish(2)
    assert swap(host, first, mode="boot")[0] == 0
    code, summary, _ = swap(host, second)
    assert (code, summary["warning"]) == (0, "cleanup")
    assert host.containers() == [f"{host.host_id}-{APP}-blue", f"{host.host_id}-{APP}-green"]
    host.config["docker_command"] = ["docker"]
    host.config_path.write_text(json.dumps(host.config))
    # When the same swap runs again, as SSM's retry or the reconciler's re-send would run it
    code, summary, _ = swap(host, second)
    # Then it is already live, without a warning, and release 1's container is gone
    assert code == 0, summary
    assert (summary["outcome"], summary["warning"]) == ("already_live", None)
    assert host.containers(all_states=True) == [f"{host.host_id}-{APP}-green"]
    assert host.get("/") == (200, body(2))
    assert host.state(APP)["previous_release"] == 1  # type: ignore[index]
