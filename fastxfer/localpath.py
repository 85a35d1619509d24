"""Where an S3 key lands on the local disk, and which keys must never land there.

S3 keys are arbitrary strings: ``../../.ssh/authorized_keys`` is a valid key.
Every command that turns keys under a prefix into files under a directory
(``fastxfer cp -r s3://... DIR``, ``fastxfer restore --download DIR``) goes
through :func:`local_path_for_key`, so the rule is written once.
"""

from __future__ import annotations

import os

from fastxfer.errors import LocalFileError

_UNSAFE_PARTS = frozenset({"", ".", ".."})


def local_path_for_key(root: str, key: str, prefix: str = "") -> str:
    """The path under ``root`` for ``key`` listed under ``prefix``.

    The part of ``key`` after ``prefix`` (leading slashes dropped) is split on
    ``/`` and joined under ``root``.  Raises :class:`~fastxfer.LocalFileError`
    for a key that cannot be saved safely: not under ``prefix``, nothing after
    it, a "directory" key ending in ``/``, an empty, ``.`` or ``..`` segment,
    a NUL byte, or a segment holding the platform's own path separator.
    """
    if not key.startswith(prefix):
        raise LocalFileError(f"key {key!r} is not under the prefix {prefix!r}")
    rel = key[len(prefix) :].lstrip("/")
    parts = rel.split("/")
    seps = [s for s in (os.sep, os.altsep) if s and s != "/"]  # "\\" on Windows
    if (
        not rel
        or "\0" in rel
        or any(p in _UNSAFE_PARTS for p in parts)
        or any(s in p for p in parts for s in seps)
    ):
        raise LocalFileError(
            f"key {key!r} cannot be saved safely under {root}",
            hint="download it alone with `fastxfer cp s3://BUCKET/KEY FILE`",
        )
    return os.path.join(root, *parts)
