"""``sync``: make a destination like a source, copying only what changed.

Directions: local directory -> S3 prefix, S3 prefix -> local directory, and
S3 prefix -> S3 prefix (server-side copies).  Both sides are listed once (one
LIST per 1,000 keys, a directory walk), filtered (:mod:`fastxfer.filters`),
and compared by relative path:

* default (``mode="mtime"``): unchanged when the sizes are equal and
  - local -> S3: the file is not newer than the object's LastModified (no
    HEAD; as ``aws s3 sync``).  Uploads store the file's mtime as rclone
    does (``mtime`` metadata), so rclone sees them as unchanged too;
  - S3 -> local: the file's mtime equals the object's (its ``mtime`` metadata,
    read with one HEAD per same-size object whose LastModified differs, else
    LastModified); downloads set it, so a second sync finds them equal;
  - S3 -> S3: the destination is not older than the source;
* ``mode="size"``: equal sizes are enough;
* ``mode="checksum"``: the CRC64NVME of the bytes must match (a HEAD per
  object, and a read of each local file of the same size).

With ``delete``, what the destination has and the source does not (among
paths the filters include) is removed, after every copy succeeded and never
when one failed.  ``dry_run`` plans and reports without changing anything.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from fastxfer import integrity
from fastxfer.errors import FastxferError, LocalFileError, translate
from fastxfer.filters import Filters
from fastxfer.localpath import is_folder_marker, map_keys
from fastxfer.manager import TransferManager
from fastxfer.objectinfo import ObjectInfo, ObjectOptions
from fastxfer.progress import Subscriber
from fastxfer.transfer import TransferHandle

Mode = Literal["mtime", "size", "checksum"]

MTIME_SLACK_NS = 1_000_000_000
"""Timestamps within a second are equal: S3's LastModified has second precision."""


@dataclass(frozen=True, slots=True)
class LocalDir:
    path: str


@dataclass(frozen=True, slots=True)
class S3Prefix:
    bucket: str
    prefix: str


Location = LocalDir | S3Prefix


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or object, by its path relative to the sync root."""

    rel: str
    size: int
    mtime_ns: int
    """Local: the file's mtime; S3: LastModified (ns)."""
    local: str | None = None
    info: ObjectInfo | None = None


@dataclass(slots=True)
class SyncPlan:
    copy: list[tuple[Entry, Entry | None]] = field(default_factory=list)
    """(source entry, destination entry if it exists) for every path to copy."""
    delete: list[Entry] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) for source paths that cannot be synced (unsafe keys, names)."""

    @property
    def bytes_to_copy(self) -> int:
        return sum(src.size for src, _ in self.copy)


@dataclass(slots=True)
class SyncResult:
    plan: SyncPlan
    copied: int = 0
    bytes_copied: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(path, error) for copies and deletes that failed."""
    delete_skipped: bool = False
    """True when ``delete`` was asked but not done because something failed."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.skipped


async def sync(
    tm: TransferManager,
    src: Location,
    dst: Location,
    *,
    mode: Mode = "mtime",
    delete: bool = False,
    dry_run: bool = False,
    filters: Filters | None = None,
    options: ObjectOptions | None = None,
    subscribers: Iterable[Subscriber] = (),
) -> SyncResult:
    """Make ``dst`` like ``src`` (see the module docstring); returns what was done.

    ``options`` (metadata, Content-Type, encryption) apply to what is uploaded;
    a server-side copy takes only ``metadata`` (added to the source's).
    """
    if isinstance(src, LocalDir) and isinstance(dst, LocalDir):
        raise LocalFileError("sync needs an s3:// side", hint="use rsync between local folders")
    opts = options or ObjectOptions()
    opts.check_applies(direction(src, dst))
    flt = filters or Filters()
    # Both sides at once: a directory walk in a thread beside the listing.
    async with asyncio.TaskGroup() as tg:
        src_scan = tg.create_task(_scan(tm, src, flt))
        dst_scan = tg.create_task(_scan(tm, dst, flt))
    src_entries, skipped = src_scan.result()
    dst_entries, _ = dst_scan.result()
    if isinstance(dst, LocalDir):
        # Keys that cannot be files (unsafe, or colliding) are reported, not merged.
        assert isinstance(src, S3Prefix)
        mapped, unmapped = map_keys(dst.path, [src.prefix + rel for rel in src_entries], src.prefix)
        keep = {key[len(src.prefix) :] for key, _ in mapped}
        skipped += [(u.key, u.reason) for u in unmapped]
        src_entries = {rel: e for rel, e in src_entries.items() if rel in keep}
    plan = SyncPlan(skipped=skipped)
    pairs = [(s, dst_entries.get(rel)) for rel, s in sorted(src_entries.items())]
    # Most comparisons are decided by the listings; those that need a HEAD or a file
    # read run concurrently, under the budget.
    quick = [_quick_unchanged(s, d, src, dst, mode) if d is not None else False for s, d in pairs]
    async with asyncio.TaskGroup() as tg:
        slow = {
            i: tg.create_task(_unchanged(tm, s, d, src, dst, mode))
            for i, ((s, d), q) in enumerate(zip(pairs, quick, strict=True))
            if q is None and d is not None
        }
    for i, (s, d) in enumerate(pairs):
        if slow[i].result() if i in slow else quick[i]:
            plan.unchanged += 1
        else:
            plan.copy.append((s, d))
    if delete:
        plan.delete = [d for rel, d in sorted(dst_entries.items()) if rel not in src_entries]
    result = SyncResult(plan)
    if dry_run:
        return result
    await _copy_all(tm, src, dst, plan, result, opts, tuple(subscribers))
    if delete and plan.delete:
        if result.failed or plan.skipped:
            result.delete_skipped = True
        else:
            await _delete_all(tm, dst, plan.delete, result)
    return result


async def _scan(
    tm: TransferManager, where: Location, flt: Filters
) -> tuple[dict[str, Entry], list[tuple[str, str]]]:
    if isinstance(where, LocalDir):
        return await asyncio.get_running_loop().run_in_executor(None, _walk, where.path, flt)
    out: dict[str, Entry] = {}
    for info in await tm.list_tree(where.bucket, where.prefix):
        if is_folder_marker(info.key, info.size):
            continue
        rel = info.key[len(where.prefix) :]
        if not rel or not flt.included(rel):
            continue
        stamp = info.last_modified.timestamp() if info.last_modified else 0.0
        out[rel] = Entry(rel, info.size, int(stamp * 1e9), info=info)
    return out, []


def _walk(root: str, flt: Filters) -> tuple[dict[str, Entry], list[tuple[str, str]]]:
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise LocalFileError(f"{root}: not a directory")
        return {}, []  # a destination that does not exist yet is empty
    out: dict[str, Entry] = {}
    skipped: list[tuple[str, str]] = []

    def fail(exc: OSError) -> None:
        skipped.append((str(exc.filename), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append((path, "the name is not valid UTF-8, so it cannot be an S3 key"))
                continue
            if not flt.included(rel):
                continue
            try:
                st = os.stat(path, follow_symlinks=True)
            except OSError as exc:
                skipped.append((path, exc.strerror or str(exc)))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # FIFOs, sockets, devices are not synced
            out[rel] = Entry(rel, st.st_size, st.st_mtime_ns, local=path)
    return out, skipped


def _quick_unchanged(s: Entry, d: Entry, src: Location, dst: Location, mode: Mode) -> bool | None:
    """Whether ``d`` is ``s`` unchanged, from the listings alone; None: a HEAD or a
    file read must tell (:func:`_unchanged`)."""
    if s.size != d.size:
        return False
    if mode == "size":
        return True
    if mode == "checksum":
        return None
    if isinstance(src, LocalDir):  # up: not newer than the upload
        return s.mtime_ns <= d.mtime_ns + MTIME_SLACK_NS
    if isinstance(dst, LocalDir):  # down: the same mtime as the object's
        if abs(s.mtime_ns - d.mtime_ns) < MTIME_SLACK_NS:
            return True  # a file set to LastModified (an object without mtime metadata)
        return None  # the object's mtime metadata decides
    return d.mtime_ns + MTIME_SLACK_NS >= s.mtime_ns  # S3 -> S3: not older


async def _unchanged(
    tm: TransferManager, s: Entry, d: Entry, src: Location, dst: Location, mode: Mode
) -> bool:
    """The comparisons :func:`_quick_unchanged` leaves open."""
    if mode == "checksum":
        return await _same_crc(tm, s, d)
    assert isinstance(dst, LocalDir)
    assert s.info is not None
    info = await tm.head(s.info.bucket, s.info.key)
    remote = info.mtime_ns
    return remote is not None and abs(remote - d.mtime_ns) < MTIME_SLACK_NS


async def _same_crc(tm: TransferManager, s: Entry, d: Entry) -> bool:
    crcs: list[int | None] = []
    for e in (s, d):
        if e.local is not None:
            value, _ = await integrity.file_crc64nvme_parallel(e.local)
            crcs.append(value)
        else:
            assert e.info is not None
            crcs.append((await tm.head(e.info.bucket, e.info.key)).whole_crc64nvme)
    return crcs[0] is not None and crcs[0] == crcs[1]


async def _copy_all(
    tm: TransferManager,
    src: Location,
    dst: Location,
    plan: SyncPlan,
    result: SyncResult,
    opts: ObjectOptions,
    subscribers: tuple[Subscriber, ...],
) -> None:
    handles: list[tuple[Entry, TransferHandle]] = []
    for s, _ in plan.copy:
        try:
            handles.append((s, _start(tm, src, dst, s, opts, subscribers)))
        except (FastxferError, OSError) as exc:
            result.failed.append((s.rel, str(translate(exc))))
    for s, h in handles:
        try:
            st = await h
        except FastxferError as exc:
            result.failed.append((s.rel, str(exc)))
        else:
            result.copied += 1
            result.bytes_copied += st.bytes_done


def _start(
    tm: TransferManager,
    src: Location,
    dst: Location,
    s: Entry,
    opts: ObjectOptions,
    subscribers: tuple[Subscriber, ...],
) -> TransferHandle:
    if isinstance(src, LocalDir) and isinstance(dst, S3Prefix):
        assert s.local is not None
        return tm.upload(
            s.local,
            dst.bucket,
            dst.prefix + s.rel,
            subscribers=subscribers,
            metadata=opts.metadata,
            content_type=opts.content_type_for(s.local),
            sse=opts.sse,
            sse_kms_key_id=opts.sse_kms_key_id,
        )
    if isinstance(src, S3Prefix) and isinstance(dst, LocalDir):
        path = os.path.join(dst.path, *s.rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return tm.download(
            src.bucket, src.prefix + s.rel, path, size_hint=s.size, subscribers=subscribers
        )
    assert isinstance(src, S3Prefix)
    assert isinstance(dst, S3Prefix)
    return tm.copy(
        src.bucket,
        src.prefix + s.rel,
        dst.bucket,
        dst.prefix + s.rel,
        metadata=opts.metadata,
        subscribers=subscribers,
    )


def direction(src: Location, dst: Location) -> str:
    """ "upload", "download" or "copy" (S3 -> S3)."""
    if isinstance(src, LocalDir):
        return "upload"
    return "download" if isinstance(dst, LocalDir) else "copy"


async def _delete_all(
    tm: TransferManager, dst: Location, entries: list[Entry], result: SyncResult
) -> None:
    if isinstance(dst, S3Prefix):
        failures = await tm.delete_objects(dst.bucket, [dst.prefix + e.rel for e in entries])
        result.failed += [(f.key, f"{f.code}: {f.message}") for f in failures]
        result.deleted += len(entries) - len(failures)
        return
    for e in entries:
        assert e.local is not None
        try:
            os.unlink(e.local)
        except OSError as exc:
            result.failed.append((e.rel, str(translate(exc))))
        else:
            result.deleted += 1
