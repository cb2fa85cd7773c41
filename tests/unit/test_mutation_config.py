"""The app config's own decisions: which pushed tags deploy, what a non-object document is told,
and the document the apps table stores. Written to kill the mutants `make mutation` found alive
in deployer/models/config.py (docs/mutation.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deployer.errors import InvalidAppConfig
from deployer.models.config import AppConfig

pytestmark = pytest.mark.unit

DOCUMENT: dict[str, Any] = {
    "app": "web",
    "repository": "team/web",
    "auto_scaling_group": "web-asg",
    "launch_template": "lt-0123456789abcdef0",
    "container": {"port": 8080, "docker_options": ["--memory=256m"]},
}


def config(**changes: Any) -> AppConfig:
    return AppConfig.parse({**DOCUMENT, **changes})


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
