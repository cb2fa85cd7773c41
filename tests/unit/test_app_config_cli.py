"""App configuration: strict validation, which pushed tags deploy, the document the apps table
stores, and the `deployer` CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from deployer import cli
from deployer.admission import accept_push
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig
from deployer.models.events import parse_push_event

from tests.conftest import REGION, WEB_CONFIG

pytestmark = pytest.mark.unit

VALID = {**WEB_CONFIG, "launch_template": "lt-0123456789abcdef0"}


def with_change(path: str, value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(VALID))
    *parents, leaf = path.split(".")
    node = document
    for key in parents:
        node = node[key]
    node[leaf] = value
    return document


def test_a_minimal_config_gets_the_documented_defaults() -> None:
    config = AppConfig.parse(
        {
            "app": "web",
            "repository": "team/web",
            "auto_scaling_group": "g",
            "launch_template": "web-lt",
            "container": {"port": 8080},
        }
    )
    assert config.tag_filter == ("*",)
    assert (config.rollout.max_concurrency, config.rollout.max_errors) == ("25%", "0")
    assert (config.auto_rollback, config.retain, config.registry_login) == (True, 3, "ecr")
    assert config.accepts_tag("anything")
    assert not config.launch_template_is_id


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("app", "Web App"),
        ("repository", "Team/Web"),
        ("container.port", 70000),
        ("container.port", "8080"),
        ("container.health_path", "health"),
        ("container.env_file", "relative/.env"),
        ("container.docker_options", ["--privileged=true"]),
        ("container.docker_options", ["--memory=1g; reboot"]),
        ("container.log_driver", "syslog"),
        ("container.log_options", {"max-size": "10m;x"}),
        ("rollout.max_concurrency", "0"),
        ("rollout.max_errors", "-1"),
        ("rollout.command_timeout", 5),
        ("retain", 0),
        ("auto_rollback", "yes"),
        ("tag_filter", []),
        ("registry_login", "docker"),
        ("unknown_field", 1),
    ],
)
def test_an_invalid_field_is_named_in_the_error(path: str, value: Any) -> None:
    with pytest.raises(InvalidAppConfig) as err:
        AppConfig.parse(with_change(path, value))
    assert path in str(err.value)


# ------------------------------------------------------------------ what a config decides
SMALL: dict[str, Any] = {
    "app": "web",
    "repository": "team/web",
    "auto_scaling_group": "web-asg",
    "launch_template": "lt-0123456789abcdef0",
    "container": {"port": 8080, "docker_options": ["--memory=256m"]},
}


def config(**changes: Any) -> AppConfig:
    """A small valid config, with `changes` on top."""
    return AppConfig.parse({**SMALL, **changes})


@pytest.mark.parametrize(
    ("tag_filter", "tag", "accepted"),
    [
        (["v*"], "v1.2.0", True),
        (["v*"], "latest", False),
        (["v*"], "V1", False),  # the filter is case-sensitive, as ECR tags are
        (["release-?", "v*"], "release-3", True),  # any one pattern is enough
        (["release-?", "v*"], "release-10", False),
        (["*"], "", True),
    ],
)
def test_a_pushed_tag_deploys_when_a_pattern_of_the_filter_matches_it(
    tag_filter: list[str], tag: str, accepted: bool
) -> None:
    assert config(tag_filter=tag_filter).accepts_tag(tag) is accepted


def test_an_untagged_push_never_deploys_even_with_a_catch_all_filter() -> None:
    assert config().accepts_tag(None) is False


@pytest.mark.parametrize(("document", "kind"), [(["web"], "list"), ("web", "str"), (None, "NoneType")])
def test_a_document_that_is_not_an_object_is_refused_naming_what_it_is(document: Any, kind: str) -> None:
    with pytest.raises(InvalidAppConfig) as refused:
        AppConfig.parse(document)
    assert str(refused.value) == f"app config must be a JSON object, got {kind}"


def test_the_stored_document_is_plain_json_without_unset_optionals() -> None:
    # Given a config with tuple fields and no registry or env file
    parsed = config(tag_filter=["v*", "release-*"])
    # When it is turned into the document the apps table stores
    document = parsed.to_document()
    # Then tuples are JSON lists, unset optionals are absent, and it parses back to the same config
    assert document["tag_filter"] == ["v*", "release-*"]
    assert document["container"]["docker_options"] == ["--memory=256m"]
    assert "registry" not in document
    assert "env_file" not in document["container"]
    assert json.loads(json.dumps(document)) == document
    assert AppConfig.parse(document) == parsed


@pytest.mark.parametrize(("template", "is_id"), [("lt-0123456789abcdef0", True), ("web-template", False)])
def test_a_launch_template_is_an_id_only_in_the_lt_form(template: str, is_id: bool) -> None:
    assert config(launch_template=template).launch_template_is_id is is_id


# ------------------------------------------------------------------ the CLI
def test_cli_put_stores_a_valid_config_and_get_and_list_show_it(deps: Any, tmp_path: Path) -> None:
    # Given a valid config file
    path = tmp_path / "web.json"
    path.write_text(json.dumps(VALID))
    out = io.StringIO()

    # When it is put, then got and listed
    assert cli.main(["app", "put", "--file", str(path)], deps=deps, out=out) == 0
    assert cli.main(["app", "get", "web"], deps=deps, out=out) == 0
    assert cli.main(["app", "list"], deps=deps, out=out) == 0

    # Then the stored config is the validated one
    text = out.getvalue()
    assert "app web stored (repository team/web)" in text
    assert '"auto_scaling_group": "web-asg"' in text
    assert "web\tteam/web\tweb-asg" in text
    assert deps.apps.find_by_repository("team/web")[0].app == "web"


def test_cli_put_of_an_invalid_config_names_the_field_and_writes_nothing(deps: Any, tmp_path: Path) -> None:
    # Given a config whose port is out of range
    path = tmp_path / "web.json"
    path.write_text(json.dumps(with_change("container.port", 0)))
    err = io.StringIO()

    # When it is put
    code = cli.main(["app", "put", "--file", str(path)], deps=deps, out=io.StringIO(), err=err)

    # Then the command fails as a configuration error naming the field, and the table stays empty
    assert code == 4
    assert "container.port" in err.getvalue()
    assert boto3.client("dynamodb", region_name=REGION).scan(TableName="AppsTable")["Items"] == []


def test_cli_reports_an_unknown_app_and_malformed_json(deps: Any, tmp_path: Path) -> None:
    err = io.StringIO()
    assert cli.main(["app", "get", "nope"], deps=deps, err=err) == 4
    assert "no app named 'nope'" in err.getvalue()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["app", "put", "--file", str(bad)], deps=deps, err=err) == 4
    assert "is not valid JSON" in err.getvalue()


def test_cli_lists_releases_newest_first(deps: Any, registered_app: Any, load_event: Any) -> None:
    accept_push(deps, parse_push_event(load_event("ecr_image_push")))
    out = io.StringIO()
    assert cli.main(["releases", "web"], deps=deps, out=out) == 0
    assert out.getvalue().startswith("1\tDEPLOYING\tpush\tv1.4.2\tsha256:")
