"""The duplicity backend for ``fastxfer+s3://bucket/prefix``.

One :class:`~fastxfer.blocking.BlockingTransferManager` (one event loop in one
thread, one connection budget) serves every call duplicity makes.  What the
backend promises duplicity 3.2 (see docs/duplicity-contract.md for the
measured contract):

* ``_put`` of a data volume takes the file over (hardlink into a spool
  directory beside duplicity's temp dir) and returns; uploads run
  concurrently, at most ``FASTXFER_SPOOL_VOLUMES`` volumes /
  ``FASTXFER_SPOOL_SIZE`` bytes at a time, then ``_put`` waits.
* ``_validate`` and ``_query`` pass for queued volumes.
* Every other file (signatures, manifests, jsonstat) is a barrier: it is
  uploaded only after every pending volume, and a failed volume raises
  :class:`FatalBackendException` there, never a plain BackendException that
  duplicity's retry would swallow before uploading the manifest anyway (the
  data-loss trap).  The failure is sticky for the rest of the run.
* Data volumes go to the class chosen with ``--s3-use-glacier``,
  ``--s3-use-glacier-ir``, ``--s3-use-deep-archive``, ``--s3-use-ia``,
  ``--s3-use-onezone-ia`` (or ``--s3-use-rrs``); everything else stays
  STANDARD (duplicity reads it for every incremental).
* ``pre_process_download_batch`` starts ONE restore job for every archived
  name it is given (the price is printed first; the job is persisted, so a
  rerun requests nothing again) and starts downloading the files in the order
  duplicity will read them, a window ahead, each as soon as it has thawed;
  ``_get`` of a file still thawing waits for it (with an ETA on a terminal).
* Errors a retry cannot fix (credentials, permissions, a missing bucket, an
  archived object that cannot be thawed) raise FatalBackendException, so
  duplicity does not retry them five times 30 s apart.
* ``_close`` drains; on any exit (failure, Ctrl-C) unfinished uploads are
  cancelled (their multipart uploads aborted) and the spool is removed.
  Incomplete multipart uploads of duplicity files left by a killed run are
  aborted before the next backup uploads its first volume.

This module and :mod:`fastxfer.duplicity.cli` are the only ones that import
duplicity.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import shutil
import sys
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import duplicity.backend  # type: ignore[import-untyped, import-not-found, unused-ignore]
from duplicity import config as dup_config
from duplicity import file_naming, log, tempdir
from duplicity.errors import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    BackendException,
    FatalBackendException,
)

from fastxfer.archive import (
    ArchivePrices,
    estimate_archive,
    expiration_days,
    plan_archive,
    run_archive,
)
from fastxfer.blocking import BlockingRestoreJob, BlockingTransferManager, at_interpreter_exit
from fastxfer.duplicity.settings import SCHEME, BackendSettings
from fastxfer.duplicity.spool import Prefetcher, SpoolDir, VolumeSpool, VolumeUploadFailed
from fastxfer.errors import (
    AccessDenied,
    BadCredentials,
    ColdObject,
    DiskFull,
    FastxferError,
    InvalidConfig,
    NoSuchBucket,
    NoSuchKey,
    UsageError,
)
from fastxfer.manager import ObjectInfo, TransferManager
from fastxfer.restore import RestoreOptions, summarize_estimate
from fastxfer.storage_class import ARCHIVE_CLASSES

T = TypeVar("T")

_FATAL = (BadCredentials, AccessDenied, NoSuchBucket, UsageError, VolumeUploadFailed)
"""fastxfer errors a retry cannot fix: raised to duplicity as FatalBackendException."""


def volume_storage_class(cfg: Any) -> str | None:
    """The storage class duplicity's S3 options choose for data volumes (None: not set).

    Same precedence as duplicity's boto3 backend.
    """
    for flag, storage_class in (
        ("s3_use_rrs", "REDUCED_REDUNDANCY"),
        ("s3_use_ia", "STANDARD_IA"),
        ("s3_use_onezone_ia", "ONEZONE_IA"),
        ("s3_use_glacier", "GLACIER"),
        ("s3_use_glacier_ir", "GLACIER_IR"),
        ("s3_use_deep_archive", "DEEP_ARCHIVE"),
    ):
        if getattr(cfg, flag, False):
            return storage_class
    return None


def volume_number(remote_filename: bytes) -> int | None:
    """The volume number of a data volume's name (with ``--file-prefix-*``), else None."""
    pr = file_naming.parse(remote_filename)
    if pr is None or pr.type not in ("full", "inc") or pr.manifest or not pr.volume_number:
        return None
    return int(pr.volume_number)


def error_code(exc: BaseException) -> int | None:
    """duplicity's error code for a fastxfer error (None: the generic backend error)."""
    if isinstance(exc, NoSuchKey | NoSuchBucket):
        return int(log.ErrorCode.backend_not_found)
    if isinstance(exc, AccessDenied | BadCredentials):
        return int(log.ErrorCode.backend_permission_denied)
    if isinstance(exc, DiskFull):
        return int(log.ErrorCode.backend_no_space)
    return None


def fatal(exc: BaseException, what: str = "") -> FatalBackendException:
    """A FatalBackendException for ``exc`` (duplicity stops without retrying)."""
    code = error_code(exc) or log.ErrorCode.backend_error
    return FatalBackendException(f"{what}: {exc}" if what else str(exc), code=code)


def _spool_base() -> str:
    """Beside duplicity's temp dir (same filesystem, so volumes can be hardlinked),
    not inside it: duplicity removes its temp dir before our exit hook runs."""
    return os.path.dirname(os.fsdecode(tempdir.default().dir()).rstrip(os.sep))


def _format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _all(coros: Sequence[Awaitable[T]]) -> list[T]:
    """Await every coroutine concurrently; the first failure cancels the others."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_wrap(c)) for c in coros]
    except BaseExceptionGroup as eg:
        first = eg.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


async def _wrap(aw: Awaitable[T]) -> T:
    return await aw


def load_settings(cfg: Any) -> BackendSettings:
    """The backend's settings: FASTXFER_* and AWS_* variables, duplicity's S3 options on top."""
    overrides: dict[str, Any] = {}
    if getattr(cfg, "s3_endpoint_url", None):
        overrides["endpoint_url"] = cfg.s3_endpoint_url
    region = (
        getattr(cfg, "s3_region_name", None)
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if region:
        overrides["region"] = region
    part = volume_part_size(int(getattr(cfg, "volsize", 0) or 0))
    if part and not os.environ.get("FASTXFER_PART_SIZE", "").strip():
        overrides["part_size"] = part
        if not os.environ.get("FASTXFER_MULTIPART_THRESHOLD", "").strip():
            overrides["multipart_threshold"] = part
    return BackendSettings.from_env(**overrides)


def volume_part_size(volsize: int) -> int | None:
    """Part size for volumes of ``volsize`` bytes: about 16 parts a volume, 5 MiB at least.

    duplicity makes one volume at a time, so a volume in one part uploads over
    one connection; in parts it uses several while the next one is made, and
    the last volume (which the signatures and the manifest wait for) is in
    the air for as long as one part takes.  Measured over the WAN profile
    (40 ms, 8 MB/s a connection), ~100 MiB at --volsize 16: 16 MiB parts (one
    a volume) 7.5-8.9 s, 5 MiB parts 6.5-7.8 s; on loopback both ~5.5-6.4 s
    (benchmarks/results/duplicity-latest.md).
    """
    if volsize <= 0:
        return None
    mib = 1024 * 1024
    return max(5 * mib, -(-volsize // (16 * mib)) * mib)


class FastxferS3Backend(duplicity.backend.Backend):  # type: ignore[misc]
    """``fastxfer+s3://bucket/prefix``: duplicity's files under ``prefix/`` in ``bucket``."""

    def __init__(self, parsed_url: Any) -> None:
        super().__init__(parsed_url)
        parts = [p for p in str(parsed_url.path).split("/") if p]
        if not parts:
            raise FatalBackendException(
                f"{SCHEME}:// needs a bucket: {SCHEME}://bucket or {SCHEME}://bucket/prefix"
            )
        self.bucket = parts[0]
        self.prefix = "".join(p + "/" for p in parts[1:])
        if dup_config.s3_use_sse or dup_config.s3_use_sse_kms:
            raise FatalBackendException(
                f"{SCHEME}: server-side encryption options are not supported "
                "(use a bucket default encryption instead)"
            )
        try:
            self.settings = load_settings(dup_config)
        except InvalidConfig as exc:
            raise fatal(exc) from None
        self.volume_class = volume_storage_class(dup_config) or self.settings.transfer.storage_class
        # Started in the background: some commands wait between making the backend
        # and its first call (collection-status: ~0.2 s, about what starting the
        # engine costs: imports, the HTTP client).  _ready() turns a failed start
        # into a FatalBackendException at the first call.
        self._xfer = BlockingTransferManager(
            self.settings.transfer, thread_name="fastxfer-duplicity", start_in_background=True
        )
        self._spool_dir = SpoolDir(_spool_base)
        self.volumes = VolumeSpool(
            self._xfer,
            self.bucket,
            self._spool_dir,
            max_volumes=self.settings.spool_volumes,
            max_bytes=self.settings.spool_bytes,
        )
        self.prefetch = Prefetcher(
            self._xfer,
            self.bucket,
            self._spool_dir,
            max_files=self.settings.spool_volumes,
            max_bytes=self.settings.spool_bytes,
        )
        self._jobs: list[BlockingRestoreJob] = []
        self._listed: dict[str, ObjectInfo] = {}
        self._metadata_sizes: dict[str, int] = {}
        self._stale_checked = False
        self._full_manifest_uploaded = False
        self._shut = False
        at_interpreter_exit(_shutdown_at_exit(weakref.ref(self)))
        # No HEAD of the bucket here: duplicity lists the target first thing, and a
        # missing bucket fails that LIST as fatally (one round trip less).

    # -- helpers ---------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _ready(self) -> None:
        """Wait for the engine's start; a failed start is fatal (a retry cannot fix it).

        Any exception, not only fastxfer's: botocore's own (a malformed AWS config
        file: ConfigParseError) would otherwise be retried by duplicity, 30 s apart.
        """
        try:
            self._xfer.wait_started()
        except Exception as exc:
            raise fatal(exc, SCHEME) from exc

    def _raise(self, exc: FastxferError, what: str = "") -> NoReturn:
        """Fatal errors as FatalBackendException; others as they are (duplicity retries them)."""
        if isinstance(exc, _FATAL):
            raise fatal(exc, what) from exc
        raise exc

    def _error_code(self, operation: str, exc: BaseException) -> int | None:
        return error_code(exc)

    # -- uploads ---------------------------------------------------------------

    def _put(self, source_path: Any, remote_filename: bytes) -> None:
        self._ready()
        name = os.fsdecode(remote_filename)
        source = os.fsdecode(source_path.name)
        if volume_number(remote_filename) is not None:
            self._abort_stale_uploads()
            try:
                self.volumes.put(source, name, self._key(name), storage_class=self.volume_class)
            except VolumeUploadFailed as exc:
                raise fatal(exc) from None
            return
        # A signature, manifest or jsonstat file: only after every volume it may name.
        try:
            self.volumes.wait_all()
        except VolumeUploadFailed as exc:
            raise fatal(exc) from None
        size = os.path.getsize(source)
        try:
            self._xfer.upload(source, self.bucket, self._key(name), storage_class="STANDARD")
        except FastxferError as exc:
            self._raise(exc, f"upload of {name}")
        self._metadata_sizes[name] = size
        parsed = file_naming.parse(remote_filename)
        if parsed is not None and parsed.type == "full" and parsed.manifest:
            self._full_manifest_uploaded = True

    def _abort_stale_uploads(self) -> None:
        """Once per run, before the first volume: abort incomplete multipart uploads of
        duplicity files under the prefix (what a killed run leaves; they cost storage)."""
        if self._stale_checked:
            return
        self._stale_checked = True
        prefix, bucket = self.prefix, self.bucket

        async def run(tm: TransferManager) -> int:
            uploads = await tm.list_multipart_uploads(bucket, prefix)
            keys = sorted(
                {
                    str(u["Key"])
                    for u in uploads
                    if file_naming.parse(os.fsencode(str(u["Key"])[len(prefix) :])) is not None
                }
            )
            await _all(
                [tm.abort_incomplete_uploads(bucket, k, include_resumable=True) for k in keys]
            )
            return len(keys)

        try:
            aborted = self._xfer.call(run)
        except FastxferError as exc:
            log.Warn(f"fastxfer: could not check for incomplete multipart uploads: {exc}")
            return
        if aborted:
            log.Notice(
                f"fastxfer: aborted incomplete multipart uploads of {aborted} file(s) "
                "left by an interrupted run"
            )

    def _validate(
        self, remote_filename: bytes, size: int, source_path: Any = None
    ) -> tuple[bool, str]:
        name = os.fsdecode(remote_filename)
        try:
            state = self.volumes.state(name)
        except VolumeUploadFailed as exc:
            raise fatal(exc) from None
        if state is not None:
            what, spooled = state
            if spooled != size:
                return False, f"{name}: {spooled} bytes spooled, {size} expected"
            return True, "queued for upload by fastxfer" if what == "pending" else "uploaded"
        remote = self._metadata_sizes.get(name)
        if remote is None:
            remote = self._query(remote_filename)["size"]
        if remote == size:
            return True, "size matches"
        return False, f"{name}: remote size {remote}, local size {size}"

    # -- listing, queries, deletes -------------------------------------------------

    def _list(self) -> list[bytes]:
        self._ready()
        try:
            infos = self._xfer.list(self.bucket, self.prefix)
        except FastxferError as exc:
            self._raise(exc, f"list {SCHEME}://{self.bucket}/{self.prefix}")
        listed: dict[str, ObjectInfo] = {}
        for info in infos:
            name = info.key[len(self.prefix) :]
            if name and not info.is_prefix:
                listed[name] = info
        self._listed = listed
        return [os.fsencode(n) for n in listed]

    def _query(self, remote_filename: bytes) -> dict[str, int]:
        return self._query_list([remote_filename])[remote_filename]

    def _query_list(self, filename_list: Sequence[bytes]) -> dict[bytes, dict[str, int]]:
        self._ready()
        result: dict[bytes, dict[str, int]] = {}
        todo: list[bytes] = []
        for fn in filename_list:
            name = os.fsdecode(fn)
            try:
                state = self.volumes.state(name)
            except VolumeUploadFailed as exc:
                raise fatal(exc) from None
            if state is not None:
                result[fn] = {"size": state[1]}
            elif name in self._metadata_sizes:
                result[fn] = {"size": self._metadata_sizes[name]}
            else:
                todo.append(fn)
        if not todo:
            return result
        bucket = self.bucket
        keys = [self._key(os.fsdecode(fn)) for fn in todo]

        async def size(tm: TransferManager, key: str) -> int:
            try:
                return (await tm.head(bucket, key)).size
            except NoSuchKey:
                return -1

        try:
            sizes = self._xfer.call(lambda tm: _all([size(tm, k) for k in keys]))
        except FastxferError as exc:
            self._raise(exc, "query")
        result.update({fn: {"size": s} for fn, s in zip(todo, sizes, strict=True)})
        return result

    def _delete(self, filename: bytes) -> None:
        self._delete_list([filename])

    def _delete_list(self, filename_list: Sequence[bytes]) -> None:
        self._ready()
        keys = [self._key(os.fsdecode(fn)) for fn in filename_list]
        try:
            failures = self._xfer.delete_many(self.bucket, keys)
        except FastxferError as exc:
            self._raise(exc, "delete")
        for fn in filename_list:
            self._listed.pop(os.fsdecode(fn), None)
        if failures:
            raise BackendException(
                "could not delete "
                + ", ".join(f"{f.key} ({f.code}: {f.message})" for f in failures[:10])
                + (f" and {len(failures) - 10} more" if len(failures) > 10 else "")
            )

    # -- downloads and thawing -------------------------------------------------------

    def pre_process_download_batch(self, remote_filenames: Sequence[bytes]) -> None:
        """Everything duplicity will read next: thaw the archived ones in one job, and
        start downloading them in read order."""
        self._ready()
        names = [os.fsdecode(n) for n in remote_filenames]
        candidates = [n for n in dict.fromkeys(names) if self._maybe_cold(n)]
        if candidates:
            self._thaw(candidates)
        # duplicity reads the volumes of a chain's sets side by side: vol 1 of
        # each set, then vol 2...; metadata files in the order given.
        order = sorted(
            enumerate(dict.fromkeys(names)),
            key=lambda p: (volume_number(os.fsencode(p[1])) or 0, p[0]),
        )
        files = []
        for _, name in order:
            key = self._key(name)
            info = self._listed.get(name)
            files.append((name, key, info.size if info else None, self._job_for(key)))
        self.prefetch.schedule(files)

    def _maybe_cold(self, name: str) -> bool:
        info = self._listed.get(name)
        return info is None or info.storage_class in ARCHIVE_CLASSES

    def _job_for(self, key: str) -> BlockingRestoreJob | None:
        for job in reversed(self._jobs):
            if key in job:
                return job
        return None

    def _thaw(self, names: Sequence[str]) -> BlockingRestoreJob | None:
        """One restore job for ``names`` (price printed first); None if none is archived."""
        s = self.settings
        options = RestoreOptions(
            bucket=self.bucket,
            keys=tuple(self._key(n) for n in names),
            tier=s.restore_tier,
            days=s.restore_days,
            poll_interval=s.poll_interval,
            state_path=s.restore_state,
        )
        try:
            estimate = self._xfer.call(lambda tm: tm.restore_job(options).estimate())
        except FastxferError as exc:
            raise fatal(exc, "restore") from exc
        to_restore = sum(t.objects for t in estimate.tiers)
        if not to_restore and not estimate.objects_restoring:
            return None
        if to_restore:
            log.Notice(
                f"fastxfer: restoring {to_restore} archived file(s) in one batch "
                f"(tier {s.restore_tier.value}, {s.restore_days} days)\n"
                + summarize_estimate(estimate)
            )
        else:
            log.Notice(
                f"fastxfer: {estimate.objects_restoring} archived file(s) are being "
                "restored already (requested by an earlier run)"
            )
        try:
            job = self._xfer.restore_job(options).start()
        except FastxferError as exc:
            raise fatal(exc, "restore") from exc
        self._jobs.append(job)
        return job

    def _get(self, remote_filename: bytes, local_path: Any) -> None:
        self._ready()
        name = os.fsdecode(remote_filename)
        dest = os.fsdecode(local_path.name)
        ahead = self.prefetch.take(name)
        if ahead is not None:
            try:
                path = self._wait(ahead, name)
            except FastxferError as exc:
                if isinstance(exc, _FATAL):
                    raise fatal(exc, f"download of {name}") from exc
                log.Info(f"fastxfer: download ahead of {name} failed ({exc}); fetching it now")
            else:
                _move(path, dest)
                return
        self._download(name, dest)

    def _download(self, name: str, dest: str) -> None:
        key = self._key(name)
        job = self._job_for(key)
        if job is not None:
            self._wait_thawed(job, name)
        info = self._listed.get(name)
        size = info.size if info else None
        try:
            self._xfer.download(self.bucket, key, dest, size_hint=size)
            return
        except ColdObject as exc:
            if job is not None:
                raise fatal(exc, f"download of {name}") from exc
        except FastxferError as exc:
            self._raise(exc, f"download of {name}")
        # Archived, and not announced through pre_process_download_batch: thaw it now.
        job = self._thaw([name])
        if job is None:
            raise fatal(ColdObject(f"{key} is archived and no restore could be started"))
        self._wait_thawed(job, name)
        try:
            self._xfer.download(self.bucket, key, dest, size_hint=size)
        except FastxferError as exc:
            raise fatal(exc, f"download of {name}") from exc

    def _wait_thawed(self, job: BlockingRestoreJob, name: str) -> None:
        try:
            self._wait(job.submit_wait_readable(self._key(name)), name)
        except FastxferError as exc:
            raise fatal(exc, f"restore of {name}") from exc

    def _wait(self, future: concurrent.futures.Future[T], name: str) -> T:
        """Wait for ``future``; while ``name`` is thawing show an ETA (a line on a
        terminal, one notice otherwise).  Interrupted: cancel it."""
        key = self._key(name)
        tty = sys.stderr.isatty()
        announced = shown = False
        try:
            while True:
                try:
                    return future.result(timeout=1.0 if tty else 60.0)
                except TimeoutError:
                    job = self._job_for(key)
                    if job is None:
                        continue
                    eta = job.eta(key)
                    if eta == 0:
                        continue  # thawed, downloading
                    text = f"fastxfer: waiting for {name} to thaw" + (
                        f", about {_format_seconds(eta)} left" if eta is not None else ""
                    )
                    if tty:
                        sys.stderr.write("\r" + text[:120].ljust(80))
                        sys.stderr.flush()
                        shown = True
                    elif not announced:
                        log.Notice(text)
                        announced = True
        except BaseException:
            future.cancel()
            raise
        finally:
            if shown:
                sys.stderr.write("\n")

    # -- the end -------------------------------------------------------------------

    def _close(self) -> None:
        """End of a successful run: wait for every upload, then stop the engine."""
        try:
            self.volumes.wait_all()
        except VolumeUploadFailed as exc:
            self._shutdown(cancel=True)
            raise fatal(exc) from None
        if self.volumes.uploaded:
            log.Info(
                f"fastxfer: {self.volumes.uploaded} volume(s) uploaded, "
                f"up to {self.volumes.peak_volumes} at once"
            )
        if self.prefetch.started_total:
            log.Info(f"fastxfer: {self.prefetch.started_total} file(s) downloaded ahead of reads")
        try:
            self._archive_after_full()
        finally:
            self._shutdown(cancel=False)

    def _archive_after_full(self) -> None:
        """FASTXFER_ARCHIVE_KEEP_FULL: after a full backup, move older chains' volumes."""
        keep = self.settings.archive_keep_full
        if keep is None or not self._full_manifest_uploaded:
            return
        target = self.settings.archive_class
        prefix, bucket = self.prefix, self.bucket

        async def run(tm: TransferManager) -> tuple[int, int]:
            listing = [o async for o in tm.list_objects(bucket, prefix)]
            plan = plan_archive(listing, target, keep_full=keep)
            expiring = expiration_days(await tm.get_lifecycle(bucket), (o.key for o in plan.move))
            cost = estimate_archive(plan, ArchivePrices.load(), tm.config, expiration=expiring)
            if cost.early_deletion_charge > 0:
                log.Warn(
                    f"fastxfer: not archiving: a lifecycle Expiration on the bucket deletes "
                    f"volumes before {target}'s minimum of {cost.minimum_days} days (about "
                    f"${cost.early_deletion_charge:.2f} of early-deletion charges); use "
                    "`fastxfer archive --accept-early-deletion` if that is intended"
                )
                return 0, 0
            log.Info(
                f"fastxfer: archiving {cost.objects} volume(s) to {target}: "
                f"{cost.copy_requests} requests, saves ${cost.monthly_saving:.4f}/month"
            )
            result = await run_archive(tm, plan)
            for key, err in result.failed:
                log.Warn(f"fastxfer: archiving {key} failed: {err}")
            return result.moved, len(result.failed)

        try:
            moved, failed = self._xfer.call(run)
        except FastxferError as exc:
            # The backup itself succeeded: say so, and why archiving did not.
            log.Warn(f"fastxfer: archiving older chains failed: {exc}")
            return
        log.Notice(
            f"fastxfer: archived {moved} volume(s) of chains older than the newest {keep} "
            f"full backup(s) to {target}" + (f"; {failed} failed" if failed else "")
        )

    def _shutdown(self, *, cancel: bool) -> None:
        """Stop everything (cancelling unfinished uploads if ``cancel``), remove the spool."""
        if self._shut:
            return
        self._shut = True
        try:
            if cancel:
                self.volumes.cancel()
            self.prefetch.cancel()
            self._xfer.close(cancel=cancel)
        finally:
            self._spool_dir.remove()


def _shutdown_at_exit(ref: weakref.ref[FastxferS3Backend]) -> Callable[[], None]:
    """Interpreter exit (after a failure or Ctrl-C; a successful run has closed already):
    cancel what is unfinished, abort its multipart uploads, remove the spool."""

    def hook() -> None:
        backend = ref()
        if backend is not None:
            backend._shutdown(cancel=True)

    return hook


def _move(path: str, dest: str) -> None:
    try:
        os.replace(path, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(path, dest)
