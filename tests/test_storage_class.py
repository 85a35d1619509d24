"""Storage-class rules: parsing, validation, first match wins (pure logic)."""

from __future__ import annotations

import pytest

from fastxfer.errors import InvalidConfig
from fastxfer.storage_class import (
    StorageClassRule,
    parse_rule,
    parse_rules,
    resolve_storage_class,
)


@pytest.mark.parametrize(
    ("text", "pattern", "storage_class"),
    [
        ("*.manifest=STANDARD", "*.manifest", "STANDARD"),
        ("volumes/=DEEP_ARCHIVE", "volumes/", "DEEP_ARCHIVE"),
        ("*.vol*.difftar.gpg=glacier", "*.vol*.difftar.gpg", "GLACIER"),
        ("a=b=deep-archive", "a=b", "DEEP_ARCHIVE"),
        (" logs/ = standard_ia ", "logs/", "STANDARD_IA"),
        ("*=GLACIER_IR", "*", "GLACIER_IR"),
    ],
)
def test_parse_rule(text: str, pattern: str, storage_class: str) -> None:
    assert parse_rule(text) == StorageClassRule(pattern, storage_class)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*.manifest", "invalid storage-class rule"),
        ("=STANDARD", "invalid storage-class rule"),
        ("*.manifest=", "invalid storage-class rule"),
        ("*.manifest=COLDEST", "invalid storage class 'COLDEST'"),
    ],
)
def test_parse_rule_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message) as info:
        parse_rule(text)
    assert info.value.hint  # says what to write instead


def test_rule_rejects_bad_class_and_empty_pattern() -> None:
    with pytest.raises(InvalidConfig, match="choose one of"):
        StorageClassRule("*", "ARCHIVE")
    with pytest.raises(InvalidConfig, match="empty"):
        StorageClassRule("", "STANDARD")


RULES = parse_rules(
    [
        "*.manifest=STANDARD",
        "*.sigtar.gpg=STANDARD",
        "volumes/=DEEP_ARCHIVE",
        "*.difftar.gpg=GLACIER",
    ]
)


@pytest.mark.parametrize(
    ("key", "default", "expected"),
    [
        ("duplicity-full.20240101.manifest", None, "STANDARD"),
        ("duplicity-full-signatures.20240101.sigtar.gpg", None, "STANDARD"),
        ("volumes/duplicity-full.vol1.difftar.gpg", None, "DEEP_ARCHIVE"),  # first match
        ("duplicity-full.vol1.difftar.gpg", None, "GLACIER"),
        ("sub/x.manifest", None, "STANDARD"),  # '*' crosses '/'
        ("volumesX/a", None, None),  # a prefix rule is not a glob
        ("other.txt", None, None),
        ("other.txt", "onezone-ia", "ONEZONE_IA"),
        ("README.MANIFEST", "INTELLIGENT_TIERING", "INTELLIGENT_TIERING"),  # case-sensitive
    ],
)
def test_resolve_first_match_wins(key: str, default: str | None, expected: str | None) -> None:
    assert resolve_storage_class(key, RULES, default) == expected


def test_resolve_rejects_bad_default() -> None:
    with pytest.raises(InvalidConfig):
        resolve_storage_class("x", (), "NOPE")


def test_str_round_trips() -> None:
    for rule in RULES:
        assert parse_rule(str(rule)) == rule
