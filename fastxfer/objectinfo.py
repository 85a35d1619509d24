"""ObjectInfo: what HEAD, GET or LIST says about an object, and what it implies;
ObjectOptions: what an upload sets on the object it writes.

The cold check (is it readable, or must it be restored first), the CRC64NVME
of the bytes when the object states one, the source file's mtime as fastxfer
and rclone store it, and LIST's RestoreStatus in the form of the HEAD header.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from fastxfer.errors import ColdObject, TransferFailed, UsageError
from fastxfer.integrity import METADATA_KEY, from_b64
from fastxfer.storage_class import is_cold


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What HEAD, GET or LIST says about an object (or, from a delimited LIST, a prefix)."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime | None
    storage_class: str
    metadata: Mapping[str, str]
    checksum_crc64nvme: str | None = None
    checksum_type: str | None = None
    restore: str | None = None
    """The x-amz-restore header (``ongoing-request="false", expiry-date=...``); from a
    LIST with restore status, the same form built from its RestoreStatus."""
    is_prefix: bool = False
    """A common prefix of a delimited LIST (``key`` is the prefix; nothing else is set)."""

    @classmethod
    def from_response(cls, bucket: str, key: str, r: Mapping[str, Any]) -> ObjectInfo:
        """From a HeadObject or GetObject response (both carry the same headers)."""
        return cls(
            bucket=bucket,
            key=key,
            size=int(r.get("ContentLength", 0)),
            etag=str(r.get("ETag", "")),
            last_modified=r.get("LastModified"),
            storage_class=str(r.get("StorageClass") or "STANDARD"),
            metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
            checksum_crc64nvme=r.get("ChecksumCRC64NVME"),
            checksum_type=r.get("ChecksumType"),
            restore=r.get("Restore"),
        )

    @classmethod
    def from_listing(cls, bucket: str, item: Mapping[str, Any]) -> ObjectInfo:
        """From one ``Contents`` entry of ListObjectsV2."""
        return cls(
            bucket=bucket,
            key=str(item["Key"]),
            size=int(item.get("Size", 0)),
            etag=str(item.get("ETag", "")),
            last_modified=item.get("LastModified"),
            storage_class=str(item.get("StorageClass") or "STANDARD"),
            metadata={},
            restore=restore_header_from_status(item.get("RestoreStatus")),
        )

    @property
    def is_cold(self) -> bool:
        """Archived and without a readable restored copy."""
        return is_cold(self.storage_class, self.restore)

    def require_readable(self, what: str = "download") -> None:
        """Raise ColdObject (exit 7, naming the restore command) if the object is cold."""
        if self.is_cold:
            state = "is being restored" if self.restore else "has not been restored"
            raise ColdObject(
                f"s3://{self.bucket}/{self.key} is in {self.storage_class} and {state}",
                hint=f"run `fastxfer restore s3://{self.bucket}/{self.key}` first, then {what} it",
                code="InvalidObjectState",
                bucket=self.bucket,
                key=self.key,
            )

    def check_same_object(self, response: Mapping[str, Any]) -> None:
        """Raise TransferFailed if a GET's ``response`` is of another version of the
        object than this HEAD described.  ``If-Match`` asks the server for that, but
        some servers ignore it (rclone serve s3 answers 200 with the new bytes)."""
        etag = response.get("ETag")
        total: int | None = None
        content_range = str(response.get("ContentRange") or "")
        if "/" in content_range:
            with contextlib.suppress(ValueError):
                total = int(content_range.rsplit("/", 1)[1])
        if (etag and self.etag and etag != self.etag) or (total is not None and total != self.size):
            raise TransferFailed(
                f"s3://{self.bucket}/{self.key} changed while it was downloaded",
                hint="download it again",
            )

    @property
    def mtime_ns(self) -> int | None:
        """The source file's modification time (ns): the ``mtime`` user metadata that
        fastxfer and rclone store on upload, else the object's LastModified."""
        raw = self.metadata.get(MTIME_KEY)
        if raw:
            parsed = parse_mtime(raw)
            if parsed is not None:
                return parsed
        if self.last_modified is not None:
            return int(self.last_modified.timestamp() * 1_000_000) * 1000
        return None

    @property
    def whole_crc64nvme(self) -> int | None:
        """The CRC64NVME of the object's bytes, when the object says it.

        fastxfer's own metadata first (client mode), else a FULL_OBJECT (or
        single PUT) checksum from S3.  A composite checksum-of-checksums
        cannot be compared with the CRC of the bytes and gives None.
        """
        meta = self.metadata.get(METADATA_KEY)
        if meta:
            return from_b64(meta)
        c = self.checksum_crc64nvme
        if c and "-" not in c and self.checksum_type in (None, "FULL_OBJECT"):
            return from_b64(c)
        return None


MTIME_KEY: Final = "mtime"
"""User metadata with the source file's mtime, in rclone's form (seconds, decimal)."""


def format_mtime(ns: int) -> str:
    """``1700000000123456789`` -> ``"1700000000.123456789"`` (what rclone stores)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def parse_mtime(raw: str) -> int | None:
    """rclone's ``mtime`` metadata (decimal seconds, or RFC 3339) -> ns since the epoch."""
    text = raw.strip()
    whole, _, frac = text.partition(".")
    if whole.lstrip("-").isdigit() and (not frac or frac.isdigit()):
        return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1_000_000) * 1000


def restore_header_from_status(status: Mapping[str, Any] | None) -> str | None:
    """ListObjectsV2's ``RestoreStatus`` in the form of the x-amz-restore header.

    One parser (:func:`fastxfer.storage_class.parse_restore_header`) then
    serves LIST and HEAD alike.
    """
    if not status:
        return None
    if status.get("IsRestoreInProgress"):
        return 'ongoing-request="true"'
    expiry = status.get("RestoreExpiryDate")
    if isinstance(expiry, datetime):
        when = expiry if expiry.tzinfo else expiry.replace(tzinfo=UTC)
        return f'ongoing-request="false", expiry-date="{email.utils.format_datetime(when, True)}"'
    return 'ongoing-request="false"'


@dataclass(frozen=True, slots=True)
class ObjectOptions:
    """Per-object settings of uploads: user metadata, Content-Type, server-side encryption."""

    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    """None: guessed from the file name (as aws does), else none sent."""
    sse: str | None = None
    sse_kms_key_id: str | None = None

    @property
    def given(self) -> list[str]:
        """The flags that were given (for refusing them where they do not apply)."""
        out = ["--metadata"] if self.metadata else []
        out += ["--content-type"] if self.content_type else []
        out += ["--sse"] if self.sse else []
        return out + (["--sse-kms-key-id"] if self.sse_kms_key_id else [])

    def check_applies(self, direction: str) -> None:
        """Refuse, before any data moves, settings that would not apply to ``direction``
        ("upload", "download" or "copy": a server-side copy keeps the source's settings,
        and ``--metadata`` adds keys)."""
        given = self.given
        if direction == "copy":
            given = [flag for flag in given if flag != "--metadata"]
        if direction != "upload" and given:
            raise UsageError(
                f"{', '.join(given)} set{'s' if len(given) == 1 else ''} how uploads are "
                f"stored; this is a {'server-side copy' if direction == 'copy' else 'download'}",
                hint="a server-side copy keeps the source's settings (--metadata adds keys)"
                if direction == "copy"
                else "leave it out",
            )

    def content_type_for(self, name: str) -> str | None:
        """``--content-type``, else the type guessed from ``name``'s extension."""
        if self.content_type:
            return self.content_type
        import mimetypes

        return mimetypes.guess_type(name, strict=False)[0]
