"""Storage-class rules: which storage class an uploaded object gets, by name.

A rule maps a pattern to a class.  A pattern ending in ``/`` is a key prefix
(``logs/``); any other pattern is a glob matched with
:func:`fnmatch.fnmatchcase` (``*.manifest``, ``duplicity-full.*.vol*``; ``*``
also matches ``/``).  The first matching rule wins, so put specific rules
first::

    rules = [parse_rule("*.manifest=STANDARD"), parse_rule("*=DEEP_ARCHIVE")]
    resolve_storage_class("backup.manifest", rules)  # -> "STANDARD"

Rules match the key *relative to the destination*: with ``base="b1/"`` (what
``fastxfer cp -r ./backup s3://bucket/b1/`` passes) the key ``b1/meta/x`` is
matched as ``meta/x``, so ``meta/=STANDARD`` and ``*.manifest=STANDARD`` mean
the same wherever the tree is uploaded.  A key outside ``base`` is matched whole.

Classes are validated when a rule is built, so a typo is rejected before any
request is sent.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from fastxfer.config import validate_storage_class
from fastxfer.errors import InvalidConfig

#: Classes from which an object must be restored before it can be read.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

_ONGOING_RE = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)
_EXPIRY_RE = re.compile(r'expiry-date\s*=\s*"([^"]+)"', re.IGNORECASE)


def parse_restore_header(header: str | None) -> tuple[bool | None, float | None]:
    """``x-amz-restore`` -> (ongoing, expiry as a POSIX timestamp in seconds).

    ``(None, None)`` when the header is absent (never restored).
    """
    if not header:
        return None, None
    m = _ONGOING_RE.search(header)
    ongoing = None if m is None else m.group(1).lower() == "true"
    e = _EXPIRY_RE.search(header)
    expiry: float | None = None
    if e:
        with contextlib.suppress(TypeError, ValueError):
            expiry = parsedate_to_datetime(e.group(1)).timestamp()
    return ongoing, expiry


def is_cold(storage_class: str | None, restore_header: str | None = None) -> bool:
    """Archived (GLACIER / DEEP_ARCHIVE) and without a readable restored copy.

    The one "is it cold?" check: downloads and restore jobs both use it.
    """
    if (storage_class or "STANDARD") not in ARCHIVE_CLASSES:
        return False
    ongoing, _ = parse_restore_header(restore_header)
    return ongoing is not False


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
        """Whether ``key`` (relative to the destination, see the module docstring)
        falls under this rule."""
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
    key: str,
    rules: Iterable[StorageClassRule],
    default: str | None = None,
    *,
    base: str = "",
) -> str | None:
    """The class of the first rule matching ``key``, else ``default`` (validated).

    Rules see ``key`` relative to ``base`` (the destination prefix, e.g.
    ``"b1/"``; see the module docstring).  ``None`` means "send no storage
    class" (the bucket default, STANDARD).
    """
    name = relative_key(key, base)
    for rule in rules:
        if rule.matches(name):
            return rule.storage_class
    return validate_storage_class(default) if default is not None else None


def relative_key(key: str, base: str) -> str:
    """``key`` without the destination prefix ``base`` (whole when it is not under it)."""
    return key[len(base) :] if base and key.startswith(base) else key
