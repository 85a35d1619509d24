"""Server-side copies: CopyObject up to ``copy_threshold``, concurrent UploadPartCopy above.

No byte passes through the client.  The source is HEADed once (size, ETag,
metadata, checksum, content type); every copy request carries
``CopySourceIfMatch`` with that ETag, so a source replaced mid-copy fails the
copy instead of mixing two versions.  Metadata is kept (``MetadataDirective``
COPY, or the source's metadata merged with new keys on a multipart copy,
which has no directive), and so is fastxfer's whole-object CRC64NVME
(``fastxfer-crc64nvme`` user metadata): downloads of the copy verify it like
the original.  A multipart copy registers its abort as soon as the UploadId
exists, like an upload.

Copying an object onto itself with another storage class is how archiving
moves data to GLACIER / DEEP_ARCHIVE without reading it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastxfer.budget import Priority
from fastxfer.errors import first_error
from fastxfer.objectinfo import ObjectInfo
from fastxfer.planning import copy_part_size
from fastxfer.shielded import start_owning

if TYPE_CHECKING:
    from fastxfer.session import Session
    from fastxfer.transfer import _Tracker


@dataclass(slots=True)
class CopyJob:
    """One server-side copy ``s3://src_bucket/src_key`` -> ``s3://bucket/key``."""

    src_bucket: str
    src_key: str
    bucket: str
    key: str
    storage_class: str | None = None
    """None: the source's class (its STANDARD default when it reports none)."""
    metadata: dict[str, str] = field(default_factory=dict)
    """User metadata added to (or replacing keys of) the source's."""


_CONTENT_HEADERS = (
    "ContentType",
    "ContentEncoding",
    "ContentDisposition",
    "ContentLanguage",
    "CacheControl",
)


async def run_copy(session: Session, job: CopyJob, tracker: _Tracker) -> None:
    head = await session.request(
        "head_object",
        bucket=job.src_bucket,
        key=job.src_key,
        ChecksumMode="ENABLED",
        what="HEAD",
        counts=tracker.requests,
    )
    src = ObjectInfo.from_response(job.src_bucket, job.src_key, head)
    # What REPLACE and a multipart copy would otherwise drop.
    content = {name: head[name] for name in _CONTENT_HEADERS if head.get(name)}
    src.require_readable("copy")
    tracker.size = src.size
    storage_class = job.storage_class or _explicit_class(src)
    tracker.storage_class = storage_class or "STANDARD"
    if src.size <= session.config.copy_threshold:
        await _copy_single(session, job, src, content, storage_class, tracker)
    else:
        await _copy_multipart(session, job, src, content, storage_class, tracker)
    tracker.checksum = src.checksum_crc64nvme or src.metadata.get("fastxfer-crc64nvme")
    tracker.verified = "size"
    tracker.progress(0, flush=True)


def _explicit_class(src: ObjectInfo) -> str | None:
    return None if src.storage_class == "STANDARD" else src.storage_class


def _source(job: CopyJob) -> dict[str, str]:
    return {"Bucket": job.src_bucket, "Key": job.src_key}


async def _copy_single(
    session: Session,
    job: CopyJob,
    src: ObjectInfo,
    content: dict[str, Any],
    storage_class: str | None,
    tracker: _Tracker,
) -> None:
    kw: dict[str, Any] = {"CopySource": _source(job), "CopySourceIfMatch": src.etag}
    if job.metadata:
        # REPLACE drops what it does not name: carry the source's along.
        kw["MetadataDirective"] = "REPLACE"
        kw["Metadata"] = {**src.metadata, **job.metadata}
        kw.update(content)
    elif job.bucket == job.src_bucket and job.key == job.src_key:
        # A copy onto itself must change something: S3 refuses one that does not.
        kw["MetadataDirective"] = "COPY"
    if storage_class:
        kw["StorageClass"] = storage_class
    if src.checksum_crc64nvme:
        kw["ChecksumAlgorithm"] = "CRC64NVME"
    tracker.parts_total = 1
    r = await session.request(
        "copy_object",
        bucket=job.bucket,
        key=job.key,
        priority=Priority.DATA,
        what="copy",
        counts=tracker.requests,
        **kw,
    )
    tracker.etag = (r.get("CopyObjectResult") or {}).get("ETag")
    tracker.parts_done = 1
    tracker.progress(src.size)


async def _copy_multipart(
    session: Session,
    job: CopyJob,
    src: ObjectInfo,
    content: dict[str, Any],
    storage_class: str | None,
    tracker: _Tracker,
) -> None:
    cfg = session.config
    part = copy_part_size(src.size, cfg)
    count = -(-src.size // part)
    tracker.multipart = True
    tracker.parts_total = count
    create_kw: dict[str, Any] = {"Metadata": {**src.metadata, **job.metadata}, **content}
    if storage_class:
        create_kw["StorageClass"] = storage_class
    await session.uploads.acquire(Priority.CONTROL)
    try:
        created = await session.request(
            "create_multipart_upload",
            bucket=job.bucket,
            key=job.key,
            what="create copy",
            counts=tracker.requests,
            **create_kw,
        )
        upload_id = str(created["UploadId"])

        etags: dict[int, str] = {}

        async def copy_part(number: int) -> None:
            try:
                start = (number - 1) * part
                end = min(src.size, start + part) - 1
                r = await session.request(
                    "upload_part_copy",
                    bucket=job.bucket,
                    key=job.key,
                    what=f"copy part {number}",
                    held_slot=True,
                    counts=tracker.requests,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=_source(job),
                    CopySourceRange=f"bytes={start}-{end}",
                    CopySourceIfMatch=src.etag,
                )
            finally:
                session.connections.release()
            etags[number] = str((r.get("CopyPartResult") or {})["ETag"])
            tracker.parts_done += 1
            tracker.progress(end - start + 1)

        try:
            async with asyncio.TaskGroup() as tg:
                for number in range(1, count + 1):
                    # The slot before the task: a 10,000-part copy does not
                    # create 10,000 waiting tasks.
                    await session.connections.acquire(Priority.DATA)
                    start_owning(tg, copy_part(number), session.connections.release)
            r = await session.request(
                "complete_multipart_upload",
                bucket=job.bucket,
                key=job.key,
                what="complete copy",
                counts=tracker.requests,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in range(1, count + 1)]
                },
            )
        except BaseException as exc:
            await session.abort_multipart(
                job.bucket,
                job.key,
                upload_id,
                what="the multipart copy to",
                counts=tracker.requests,
            )
            if isinstance(exc, BaseExceptionGroup):
                raise first_error(exc) from exc
            raise
        tracker.etag = r.get("ETag")
    finally:
        session.uploads.release()
        session.pacer.upload_closed()
