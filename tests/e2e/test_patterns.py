"""EventBridge pattern matching, checked against the behaviour AWS documents."""

from __future__ import annotations

import pytest

from localcloud.patterns import PatternError, matches

pytestmark = pytest.mark.unit

ECR_PUSH = {
    "detail-type": "ECR Image Action",
    "source": "aws.ecr",
    "detail": {
        "action-type": "PUSH",
        "result": "SUCCESS",
        "repository-name": "web",
        "image-tag": "v2",
        "image-digest": "sha256:" + "a" * 64,
    },
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1"],
}


def test_exact_values_match_when_every_field_has_one_of_the_listed_values():
    # Given a pattern of exact values
    pattern = {"source": ["aws.ecr"], "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"]}}
    # Then the push matches and a failed push does not
    assert matches(pattern, ECR_PUSH)
    failed = {**ECR_PUSH, "detail": {**ECR_PUSH["detail"], "result": "FAILURE"}}
    assert not matches(pattern, failed)


def test_a_field_missing_from_the_event_does_not_match_an_exact_value():
    assert not matches({"detail": {"image-tag": ["v2"], "nope": ["x"]}}, ECR_PUSH)


def test_prefix_and_suffix_compare_the_start_and_end_of_strings():
    assert matches({"detail": {"image-tag": [{"prefix": "v"}]}}, ECR_PUSH)
    assert not matches({"detail": {"image-tag": [{"prefix": "release-"}]}}, ECR_PUSH)
    assert matches({"detail": {"repository-name": [{"suffix": "eb"}]}}, ECR_PUSH)


def test_anything_but_excludes_listed_values_and_prefixes():
    assert matches({"detail": {"result": [{"anything-but": ["FAILURE"]}]}}, ECR_PUSH)
    assert not matches({"detail": {"result": [{"anything-but": "SUCCESS"}]}}, ECR_PUSH)
    assert not matches({"detail": {"image-tag": [{"anything-but": {"prefix": "v"}}]}}, ECR_PUSH)


def test_anything_but_does_not_match_a_missing_field():
    assert not matches({"detail": {"missing": [{"anything-but": "x"}]}}, ECR_PUSH)


def test_exists_tests_presence_and_absence():
    assert matches({"detail": {"image-tag": [{"exists": True}]}}, ECR_PUSH)
    assert not matches({"detail": {"image-tag": [{"exists": False}]}}, ECR_PUSH)
    assert matches({"detail": {"missing": [{"exists": False}]}}, ECR_PUSH)
    assert matches({"missing": {"deeper": [{"exists": False}]}}, ECR_PUSH)


def test_a_list_value_in_the_event_matches_when_any_element_matches():
    assert matches({"resources": [{"prefix": "arn:aws:ec2:"}]}, ECR_PUSH)
    assert not matches({"resources": ["arn:other"]}, ECR_PUSH)


def test_numeric_ranges_and_or_alternatives():
    event = {"detail": {"n": 5, "kind": "a"}}
    assert matches({"detail": {"n": [{"numeric": [">", 1, "<=", 5]}]}}, event)
    assert not matches({"detail": {"n": [{"numeric": [">", 5]}]}}, event)
    assert matches({"$or": [{"detail": {"kind": ["b"]}}, {"detail": {"n": [5]}}]}, event)
    assert not matches({"$or": [{"detail": {"kind": ["b"]}}, {"detail": {"n": [6]}}]}, event)


def test_equals_ignore_case_and_wildcard():
    assert matches({"detail": {"result": [{"equals-ignore-case": "success"}]}}, ECR_PUSH)
    assert matches({"detail": {"repository-name": [{"wildcard": "w*b"}]}}, ECR_PUSH)
    assert not matches({"detail": {"repository-name": [{"wildcard": "x*"}]}}, ECR_PUSH)


def test_types_are_not_coerced():
    assert not matches({"detail": {"n": ["5"]}}, {"detail": {"n": 5}})
    assert matches({"detail": {"n": [5]}}, {"detail": {"n": 5.0}})


def test_a_malformed_pattern_is_refused_with_a_message():
    with pytest.raises(PatternError, match="must be a list or an object"):
        matches({"source": "aws.ecr"}, ECR_PUSH)
    with pytest.raises(PatternError, match="unsupported operator"):
        matches({"source": [{"regex": "x"}]}, ECR_PUSH)
