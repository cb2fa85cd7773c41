"""App configuration: strict validation, which pushed tags deploy, the document the apps table
stores, and the `deployer` CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import boto3
import jsonschema
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


def test_cli_put_warns_of_an_alarm_gate_cloudwatch_does_not_have(deps: Any, tmp_path: Path) -> None:
    # Given a config naming two alarm gates, of which CloudWatch has one
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName="web-errors",
        Namespace="Deployer/Proxy",
        MetricName="Errors5xx",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=10,
        ComparisonOperator="GreaterThanThreshold",
    )
    path = tmp_path / "web.json"
    path.write_text(json.dumps(with_change("rollout", {"alarms": ["web-errors", "web-p99"]})))
    out, err = io.StringIO(), io.StringIO()

    # When it is put
    code = cli.main(["app", "put", "--file", str(path), "--json"], deps=deps, out=out, err=err)

    # Then it is stored, and the missing one is named with what it will do
    assert code == 0
    assert json.loads(out.getvalue())["missing_alarms"] == ["web-p99"]
    assert "alarm web-p99 does not exist: a staged release of web fails at its first stage" in err.getvalue()
    assert deps.apps.get("web").rollout.alarms == ("web-errors", "web-p99")


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


# ------------------------------------------------------------------ config files: YAML and JSON
WEB_YAML = """\
# web's deploy config, kept in the app's repository
app: web
repository: team/web
tag_filter: [v*, release-*]
auto_scaling_group: web-asg
launch_template: lt-0123456789abcdef0
container:
  port: 8080
  health_path: /health
  docker_options: [--memory=256m]
  log_options: {max-size: 10m}
rollout:
  max_concurrency: 25%
auto_rollback: true
"""


def cli_run(deps: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), deps=deps, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def stored_apps() -> list[Any]:
    return boto3.client("dynamodb", region_name=REGION).scan(TableName="AppsTable")["Items"]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_yaml_config_is_validated_and_stored_as_the_same_config_as_its_json(
    deps: Any, tmp_path: Path
) -> None:
    # Given the same config as YAML and as JSON
    yaml_file = write(tmp_path, "web.yaml", WEB_YAML)
    json_file = write(
        tmp_path,
        "web.json",
        json.dumps(
            {
                "app": "web",
                "repository": "team/web",
                "tag_filter": ["v*", "release-*"],
                "auto_scaling_group": "web-asg",
                "launch_template": "lt-0123456789abcdef0",
                "container": {
                    "port": 8080,
                    "health_path": "/health",
                    "docker_options": ["--memory=256m"],
                    "log_options": {"max-size": "10m"},
                },
                "rollout": {"max_concurrency": "25%"},
                "auto_rollback": True,
            }
        ),
    )

    # When the YAML file is validated, then put (no app argument), and the JSON one put by `app put FILE`
    validated = cli_run(deps, "config", "validate", yaml_file)
    put = cli_run(deps, "config", "put", yaml_file)
    from_yaml = deps.apps.get("web")
    by_app_put = cli_run(deps, "app", "put", json_file)

    # Then each succeeds and both files store the same config
    assert validated[0] == 0
    assert "valid: app web (repository team/web, group web-asg)" in validated[1]
    assert put[:2] == (0, "app web stored (repository team/web)\n")
    assert by_app_put[:2] == (0, "app web stored (repository team/web)\n")
    assert deps.apps.get("web") == from_yaml
    assert from_yaml.tag_filter == ("v*", "release-*")
    assert from_yaml.container.log_options == {"max-size": "10m"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("  port: 8080", "  port: 70000"), "container.port (line 8): Input should be less than or equal"),
        (("auto_rollback: true", "auto_rollback: yes"), "auto_rollback (line 14): Input should be a valid"),
        (("auto_rollback: true", "auto_rollback: true\ncolour: blue"), "colour (line 15): Extra inputs"),
        (("repository: team/web\n", ""), "repository (line 2): Field required"),
        (("tag_filter: [v*, release-*]", "tag_filter: [v*, 'a b']"), "tag_filter.1 (line 4): String"),
        (("  health_path: /health", "  health_path: health"), "container.health_path (line 9)"),
    ],
)
def test_a_bad_yaml_field_is_named_with_its_line_and_nothing_is_stored(
    deps: Any, tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    # Given the YAML config with one field made wrong
    path = write(tmp_path, "web.yaml", WEB_YAML.replace(*change))

    # When it is put
    code, out, err = cli_run(deps, "config", "put", "web", path)

    # Then one error line names the field, its line and what is wrong; nothing is stored
    assert (code, out) == (4, "")
    assert err.count("\n") == 1
    assert err.startswith(f"error: {path}: invalid app config: ")
    assert expected in err
    assert stored_apps() == []


BAD_RETAIN_JSON = """\
{
  "app": "web",
  "repository": "team/web",
  "retain": 0,
  "auto_scaling_group": "web-asg",
  "launch_template": "lt-0123456789abcdef0",
  "container": {"port": 8080}
}
"""


def test_a_bad_json_field_is_named_with_its_line_too(deps: Any, tmp_path: Path) -> None:
    # Given a JSON config whose `retain` (line 4) is out of range
    path = write(tmp_path, "web.json", BAD_RETAIN_JSON)

    # When it is put
    code, _, err = cli_run(deps, "app", "put", "--file", path)

    # Then the error names the field and its line; nothing is stored
    assert code == 4
    assert "retain (line 4): Input should be greater than or equal to 1" in err
    assert stored_apps() == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("app: web\napp: api\n", "line 2, column 1: while reading a mapping found the key 'app' twice"),
        ("app: web\n  container: [\n", "not valid YAML: line 2, column 12: mapping values are not allowed"),
        ("app: web\n---\napp: api\n", "is not valid YAML: line 2, column 1: expected a single document"),
        ("app: &a web\nrepository: *a\n", "line 2, column 13: found the alias *a: anchors and aliases"),
        ("", "is empty: an app config is a mapping of fields"),
        ("- app: web\n", "app config must be a JSON object, got list"),
        ("app: !!binary aGVsbG8=\n", "only strings, numbers, booleans, null, lists and mappings are allowed"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_one_error_line_and_stores_nothing(
    deps: Any, tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, "web.yml", text)
    code, out, err = cli_run(deps, "config", "put", path)
    assert (code, out) == (4, "")
    assert err.count("\n") == 1
    assert fragment in err
    assert stored_apps() == []


def test_yaml_dates_stay_strings_so_a_tag_pattern_is_kept_as_written(deps: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", WEB_YAML.replace("[v*, release-*]", "[2024-01-01]"))
    assert cli_run(deps, "config", "put", path)[0] == 0
    assert deps.apps.get("web").tag_filter == ("2024-01-01",)


def test_config_put_with_an_app_refuses_a_file_for_another_app(deps: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", WEB_YAML)
    code, _, err = cli_run(deps, "config", "put", "api", path)
    assert code == 4
    assert err == f"error: {path} configures app 'web', not 'api'\n"
    assert stored_apps() == []


def test_app_put_needs_the_file_exactly_once(deps: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", WEB_YAML)
    for argv in (("app", "put"), ("app", "put", path, "--file", path)):
        code, _, err = cli_run(deps, *argv)
        assert (code, err) == (4, "error: app put: give the config file once, as FILE or --file FILE\n")
    assert stored_apps() == []


# ------------------------------------------------------------------ config diff
def test_config_diff_of_an_app_not_stored_lists_every_field_and_exits_1(deps: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", WEB_YAML)
    code, out, _ = cli_run(deps, "config", "diff", path)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "web is not stored yet: `deployer config put` would store every field"
    assert "  container.port: (unset) -> 8080" in lines
    assert '  tag_filter: (unset) -> ["v*", "release-*"]' in lines
    assert stored_apps() == []


def test_config_diff_of_the_stored_config_says_no_change_and_exits_0(deps: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", WEB_YAML)
    assert cli_run(deps, "config", "put", path)[0] == 0
    no_change = (0, "web: no change (the stored config is the same)\n")
    assert cli_run(deps, "config", "diff", path)[:2] == no_change


def test_config_diff_shows_each_changed_field_stored_then_file_and_stores_nothing(
    deps: Any, tmp_path: Path
) -> None:
    # Given web stored from the YAML file
    stored_file = write(tmp_path, "web.yaml", WEB_YAML)
    assert cli_run(deps, "config", "put", stored_file)[0] == 0
    before = deps.apps.get("web")
    # and an edited copy: another port, a new env file, no log options, one more tag pattern
    edited = (
        WEB_YAML.replace("port: 8080", "port: 9090\n  env_file: /etc/web.env")
        .replace("  log_options: {max-size: 10m}\n", "")
        .replace("[v*, release-*]", "[v*, release-*, rc-*]")
    )
    path = write(tmp_path, "edited.yaml", edited)

    # When it is diffed, as text and as JSON
    code, out, _ = cli_run(deps, "config", "diff", path)
    json_code, json_out, _ = cli_run(deps, "config", "diff", path, "--json")

    # Then every changed field is listed, stored value first; exit 1; the stored config is unchanged
    assert code == json_code == 1
    assert out.splitlines() == [
        "web: 4 fields would change (stored -> file)",
        '  container.env_file: (unset) -> "/etc/web.env"',
        '  container.log_options.max-size: "10m" -> (unset)',
        "  container.port: 8080 -> 9090",
        '  tag_filter: ["v*", "release-*"] -> ["v*", "release-*", "rc-*"]',
    ]
    answer = json.loads(json_out)
    assert (answer["app"], answer["stored"], answer["differs"]) == ("web", True, True)
    assert {"field": "container.port", "stored": 8080, "file": 9090} in answer["changes"]
    assert deps.apps.get("web") == before


def test_config_diff_of_an_invalid_file_exits_4_naming_the_field(deps: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", WEB_YAML.replace("port: 8080", "port: 0"))
    code, out, err = cli_run(deps, "config", "diff", path)
    assert (code, out) == (4, "")
    assert "container.port (line 8)" in err


# ------------------------------------------------------------------ config schema
def test_config_schema_is_a_json_schema_that_accepts_a_valid_config_and_refuses_a_bad_one(
    deps: Any,
) -> None:
    # When the schema is printed
    code, out, _ = cli_run(deps, "config", "schema")

    # Then it is a JSON Schema of the model: a valid config passes it, wrong ones are refused
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    required = {"app", "repository", "auto_scaling_group", "launch_template", "container"}
    assert set(schema["required"]) == required
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(VALID)) == []
    assert [e.json_path for e in validator.iter_errors(with_change("container.port", 70000))] == [
        "$.container.port"
    ]
    assert [e.json_path for e in validator.iter_errors(with_change("colour", "blue"))] == ["$"]


def test_the_readmes_yaml_example_is_a_valid_config(deps: Any, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```yaml\n# yaml-language-server")
    example = readme[start + len("```yaml\n") : readme.index("```", start + 7)]
    code, out, _ = cli_run(deps, "config", "validate", write(tmp_path, "deploy.yaml", example))
    assert (code, out) == (0, "valid: app web (repository team/web, group web-asg)\n")
