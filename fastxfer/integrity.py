"""Checksums: CRC64NVME through awscrt (~0.1 s of CPU per GiB), MD5 where a server wants it.

S3 exposes a FULL_OBJECT CRC64NVME for multipart uploads (the CRC of the whole
object, not a checksum of checksums), so range CRCs computed while downloading
can be combined and compared with it.  See
https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
"""

from __future__ import annotations

import base64
import hashlib
import mmap
import os
from typing import Any

METADATA_KEY = "fastxfer-crc64nvme"
"""User-metadata key under which ``client`` mode stores the whole-object CRC."""


def _checksums() -> Any:
    # awscrt's import costs ~50 ms: paid by the first checksum, not by every
    # program that imports fastxfer (the duplicity backend starts without it).
    from awscrt import checksums

    return checksums


def crc64nvme(data: bytes | bytearray | memoryview | mmap.mmap, previous: int = 0) -> int:
    return int(_checksums().crc64nvme(data, previous))


def combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """CRC of A+B from CRC(A), CRC(B) and len(B)."""
    return int(_checksums().combine_crc64nvme(crc_a, crc_b, length_b))


def to_b64(crc: int) -> str:
    """The form S3 uses in x-amz-checksum-crc64nvme: base64 of 8 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(8, "big")).decode("ascii")


def from_b64(text: str) -> int:
    raw = base64.b64decode(text)
    if len(raw) != 8:
        raise ValueError(f"not a CRC64NVME value: {text!r}")
    return int.from_bytes(raw, "big")


def md5_b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


_WINDOW = 32 * 1024 * 1024


def file_crc64nvme(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(crc, size) of a file.  Blocking.

    Read through mmap so no copy is made, one 32 MiB window at a time: mapped
    pages count in the process's RSS, and a whole-file mapping of a 1 GiB
    file showed up as 1 GiB of peak RSS.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        crc = 0
        for off in range(0, size, _WINDOW):
            length = min(_WINDOW, size - off)
            with mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ, offset=off) as m:
                m.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(m)
                try:
                    crc = crc64nvme(view, crc)
                finally:
                    view.release()
        return crc, size
