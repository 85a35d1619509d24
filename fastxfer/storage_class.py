"""Storage-class rules: which storage class an uploaded object gets, by name.

A rule maps a pattern to a class.  A pattern ending in ``/`` is a key prefix
(``logs/``); any other pattern is a glob matched against the whole key with
:func:`fnmatch.fnmatchcase` (``*.manifest``, ``duplicity-full.*.vol*``; ``*``
also matches ``/``).  The first matching rule wins, so put specific rules
first::

    rules = [parse_rule("*.manifest=STANDARD"), parse_rule("*=DEEP_ARCHIVE")]
    resolve_storage_class("backup.manifest", rules)  # -> "STANDARD"

Classes are validated when a rule is built, so a typo is rejected before any
request is sent.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from fastxfer.config import validate_storage_class
from fastxfer.errors import InvalidConfig

#: Classes from which an object must be restored before it can be read.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


@dataclass(frozen=True, slots=True)
class StorageClassRule:
    """``pattern`` (glob, or prefix when it ends with ``/``) -> ``storage_class``.

    ``storage_class`` is canonicalised (``deep-archive`` -> ``DEEP_ARCHIVE``);
    an unknown class or an empty pattern raises InvalidConfig.
    """

    pattern: str
    storage_class: str

    def __post_init__(self) -> None:
        if not self.pattern:
            raise InvalidConfig(
                "empty storage-class rule pattern",
                hint="use a glob such as '*.manifest' or a prefix ending in '/'",
            )
        object.__setattr__(self, "storage_class", validate_storage_class(self.storage_class))

    @property
    def is_prefix(self) -> bool:
        return self.pattern.endswith("/")

    def matches(self, key: str) -> bool:
        """Whether ``key`` (an S3 object key) falls under this rule."""
        if self.is_prefix:
            return key.startswith(self.pattern)
        return fnmatch.fnmatchcase(key, self.pattern)

    def __str__(self) -> str:
        return f"{self.pattern}={self.storage_class}"


def parse_rule(text: str) -> StorageClassRule:
    """Parse ``PATTERN=CLASS`` (``"*.manifest=STANDARD"``, ``"data/=DEEP_ARCHIVE"``).

    The last ``=`` separates the class, so patterns may contain ``=``.
    """
    pattern, sep, storage_class = text.rpartition("=")
    if not sep or not pattern.strip() or not storage_class.strip():
        raise InvalidConfig(
            f"invalid storage-class rule {text!r}",
            hint="write PATTERN=CLASS, e.g. '*.manifest=STANDARD' or 'volumes/=DEEP_ARCHIVE'",
        )
    try:
        return StorageClassRule(pattern.strip(), storage_class.strip())
    except InvalidConfig as exc:
        raise InvalidConfig(
            f"in storage-class rule {text!r}: {exc.message}", hint=exc.hint
        ) from exc


def parse_rules(texts: Iterable[str]) -> tuple[StorageClassRule, ...]:
    """:func:`parse_rule` for each of ``texts`` (e.g. repeated ``--storage-class-rule``)."""
    return tuple(parse_rule(t) for t in texts)


def resolve_storage_class(
    key: str, rules: Iterable[StorageClassRule], default: str | None = None
) -> str | None:
    """The class of the first rule matching ``key``, else ``default`` (validated).

    ``None`` means "send no storage class" (the bucket default, STANDARD).
    """
    for rule in rules:
        if rule.matches(key):
            return rule.storage_class
    return validate_storage_class(default) if default is not None else None
