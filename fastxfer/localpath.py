"""Where an S3 key lands on the local disk, and which keys must never land there.

S3 keys are arbitrary strings: ``../../.ssh/authorized_keys`` is a valid key,
and so are ``a//b`` and ``a/./b``, which a file system would fold into ``a/b``.
Every command that turns keys under a prefix into files under a directory
(``fastxfer cp -r s3://... DIR``, ``fastxfer restore --download DIR``) goes
through :func:`local_path_for_key` (one key) or :func:`map_keys` (a listing,
which also finds keys that would land on one file), so the rule is written once:

* the part of the key after the prefix is split on ``/``; each segment is one
  file or directory name under the root, kept exactly (never normalised);
* a key with an empty, ``.`` or ``..`` segment (``a//b``, a leading ``/``,
  ``a/./b``, ``a/../b``), a NUL byte, the platform's own separator in a
  segment, or a segment longer than a file name may be, cannot be saved;
* two keys cannot be saved when they would be the same file, or when one would
  be a file and the other needs it as a directory (``d`` and ``d/x``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from fastxfer.errors import LocalFileError

MAX_NAME_BYTES = 255
"""Longest file name (one path segment) on Linux, macOS and Windows file systems."""

_SEPARATORS = tuple(s for s in (os.sep, os.altsep) if s and s != "/")  # "\\" on Windows


@dataclass(frozen=True, slots=True)
class UnmappedKey:
    """A key that is not saved, and why (one short clause, e.g. "'..' segment")."""

    key: str
    reason: str


def key_path_problem(key: str, prefix: str = "") -> str | None:
    """Why ``key`` (listed under ``prefix``) cannot be saved as a file, or None if it can."""
    if not key.startswith(prefix):
        return f"not under the prefix {prefix!r}"
    rel = key[len(prefix) :]
    if not rel:
        return "nothing after the prefix"
    if "\0" in rel:
        return "NUL byte in the key"
    for part in rel.split("/"):
        if part == "":
            return "empty path segment (a '//', or a leading or trailing '/')"
        if part in (".", ".."):
            return f"{part!r} path segment"
        if any(s in part for s in _SEPARATORS):
            return f"{os.sep!r} in a name"
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            return f"a name longer than {MAX_NAME_BYTES} bytes"
    return None


def local_path_for_key(root: str, key: str, prefix: str = "") -> str:
    """The path under ``root`` for ``key`` listed under ``prefix``.

    Raises :class:`~fastxfer.LocalFileError` for a key that cannot be saved
    safely (see :func:`key_path_problem` and the module docstring).
    """
    problem = key_path_problem(key, prefix)
    if problem is not None:
        raise LocalFileError(
            f"key {key!r} cannot be saved under {root}: {problem}",
            hint="download it alone with `fastxfer cp s3://BUCKET/KEY FILE`",
        )
    return os.path.join(root, *key[len(prefix) :].split("/"))


def is_folder_marker(key: str, size: int) -> bool:
    """An empty object whose key ends in ``/``: a console's "folder", not a file."""
    return key.endswith("/") and size == 0


def map_keys(
    root: str, keys: Iterable[str], prefix: str = ""
) -> tuple[list[tuple[str, str]], list[UnmappedKey]]:
    """Local paths under ``root`` for ``keys`` listed under ``prefix``, all distinct.

    Returns ``(mapped, unmapped)``: ``(key, path)`` for every key that can be
    saved, in the order given, and the others with the reason.  A key that
    would be a file where another key needs a directory (``d`` beside ``d/x``)
    is unmapped, the keys below it are kept; of keys that would be the same
    file (the same name up to case on a platform that ignores it), the first
    is kept.
    """
    safe: list[tuple[str, tuple[str, ...]]] = []
    unmapped: list[UnmappedKey] = []
    for key in keys:
        problem = key_path_problem(key, prefix)
        if problem is not None:
            unmapped.append(UnmappedKey(key, problem))
        else:
            safe.append((key, tuple(key[len(prefix) :].split("/"))))

    def norm(parts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(os.path.normcase(p) for p in parts)

    dirs: dict[tuple[str, ...], str] = {}  # directory (normalised) -> a key that needs it
    for key, parts in safe:
        n = norm(parts)
        for i in range(1, len(n)):
            dirs.setdefault(n[:i], key)
    files: dict[tuple[str, ...], str] = {}
    mapped: list[tuple[str, str]] = []
    for key, parts in safe:
        n = norm(parts)
        if n in dirs:
            unmapped.append(UnmappedKey(key, f"it would be a file and the folder of {dirs[n]!r}"))
        elif n in files:
            unmapped.append(UnmappedKey(key, f"it would be the same file as {files[n]!r}"))
        else:
            files[n] = key
            mapped.append((key, os.path.join(root, *parts)))
    return mapped, unmapped


def check_writable_destination(path: str) -> None:
    """Raise LocalFileError unless files can be created at ``path`` (made if missing).

    ``path`` is a directory to create files in, or a file to replace (its
    directory must then be writable: downloads write a temp file beside it).
    Walks up to the nearest existing ancestor: a regular file there means
    ``path`` would be under a file; a directory there must be writable.
    Catches a read-only or misspelt destination before anything is downloaded.
    """
    target = os.path.abspath(path)
    probe = target
    if os.path.lexists(target) and not os.path.isdir(target):
        probe = os.path.dirname(target)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise LocalFileError(
            f"{path}: {probe} is not a directory", hint="choose a destination under a directory"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LocalFileError(
            f"{path}: permission denied (cannot write in {probe})",
            hint="choose a destination you can write to",
        )


__all__ = [
    "MAX_NAME_BYTES",
    "UnmappedKey",
    "check_writable_destination",
    "is_folder_marker",
    "key_path_problem",
    "local_path_for_key",
    "map_keys",
]
