"""Batch restores from GLACIER and DEEP_ARCHIVE: request, wait cheaply, download as they thaw.

A :class:`RestoreJob` takes a list of keys or a prefix in one bucket and

1. classifies every object (:func:`classify`): STANDARD, GLACIER_IR and the
   other online classes are read directly, GLACIER / DEEP_ARCHIVE objects need
   a restore unless a restored copy still exists;
2. sends one RestoreObject per object that needs it, concurrently through the
   manager's connection budget and under a requests-per-second cap
   (409 RestoreAlreadyInProgress counts as requested);
3. polls: one ListObjectsV2 with ``OptionalObjectAttributes=RestoreStatus``
   reports up to 1,000 objects, with a HEAD per object as the fallback for
   servers that do not answer it; the interval follows the tier's expected
   time (:func:`default_poll_interval`) and sleeps on an injected clock;
4. with ``download_dir``, starts each object's download as soon as a poll sees
   it thawed (ready objects go in the order requested), and re-issues
   RestoreObject for copies that would expire before they are downloaded.

The job lives in a small sqlite file (:class:`RestoreStore`) so a process can
die and come back hours later: nothing already requested is requested again
and files already downloaded with the right size are kept.

Example::

    async with TransferManager(config) as tm:
        job = RestoreJob(tm, RestoreOptions(bucket="b", prefix="2024/", tier=RestoreTier.BULK))
        print((await job.estimate()).total_price)
        report = await job.run()
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from fastxfer.budget import Priority
from fastxfer.clock import Clock, SystemClock
from fastxfer.errors import (
    BadCredentials,
    ColdObject,
    EndpointUnreachable,
    FastxferError,
    InvalidConfig,
    LocalFileError,
    S3Error,
    TransferFailed,
    UsageError,
)
from fastxfer.pacing import RequestRateLimiter
from fastxfer.planning import fit_part_size
from fastxfer.storage_class import ARCHIVE_CLASSES, parse_restore_header

if TYPE_CHECKING:
    from fastxfer.manager import TransferManager

log = logging.getLogger("fastxfer.restore")

LIST_PAGE_SIZE: Final = 1000
"""Objects reported per ListObjectsV2 request (the S3 maximum)."""
GB: Final = 1024**3
"""AWS bills per GB of 2**30 bytes."""
DAY: Final = 86400.0


class RestoreTier(StrEnum):
    """Retrieval tier of a RestoreObject request (``GlacierJobParameters.Tier``)."""

    EXPEDITED = "Expedited"
    STANDARD = "Standard"
    BULK = "Bulk"

    @classmethod
    def parse(cls, text: str) -> RestoreTier:
        """Case-insensitive: ``"bulk"`` -> ``RestoreTier.BULK``."""
        for tier in cls:
            if tier.value.lower() == text.strip().lower():
                return tier
        raise InvalidConfig(
            f"invalid restore tier {text!r}", hint="choose Expedited, Standard or Bulk"
        )


class ObjectState(StrEnum):
    """Where an object is on the way from the archive to the local disk."""

    READABLE = "readable"
    """Online class (STANDARD, GLACIER_IR, ...): GET works, nothing to restore."""
    COLD = "cold"
    """Archived, no restore requested (or the restored copy expired)."""
    RESTORING = "restoring"
    """RestoreObject accepted; not readable yet."""
    RESTORED = "restored"
    """A temporary restored copy is readable until ``expiry``."""


# Typical completion time (seconds) per (class, tier), from the S3 user guide
# "Archive retrieval options": Expedited 1-5 min, Standard 3-5 h, Bulk 5-12 h
# for GLACIER; Standard within 12 h and Bulk within 48 h for DEEP_ARCHIVE.
EXPECTED_RESTORE_SECONDS: Final[Mapping[tuple[str, RestoreTier], float]] = {
    ("GLACIER", RestoreTier.EXPEDITED): 5 * 60.0,
    ("GLACIER", RestoreTier.STANDARD): 5 * 3600.0,
    ("GLACIER", RestoreTier.BULK): 12 * 3600.0,
    ("DEEP_ARCHIVE", RestoreTier.STANDARD): 12 * 3600.0,
    ("DEEP_ARCHIVE", RestoreTier.BULK): 48 * 3600.0,
}


def check_tier(storage_class: str, tier: RestoreTier) -> None:
    """Raise InvalidConfig if ``tier`` does not exist for ``storage_class``.

    DEEP_ARCHIVE has no Expedited tier (AWS answers 400 InvalidArgument).
    """
    if storage_class == "DEEP_ARCHIVE" and tier is RestoreTier.EXPEDITED:
        raise InvalidConfig(
            "the Expedited tier does not exist for DEEP_ARCHIVE objects",
            hint="use --tier Standard (within 12 hours) or --tier Bulk (within 48 hours)",
        )


def default_poll_interval(storage_class: str, tier: RestoreTier) -> float:
    """Seconds between polls for a restore of this class and tier.

    Minutes for Expedited (1 min; it completes in 1-5 min), hours for the
    others (1 h; 4 h for DEEP_ARCHIVE Bulk, which takes up to 48 h): polling
    more often costs requests and finds nothing new.
    """
    if tier is RestoreTier.EXPEDITED:
        return 60.0
    if storage_class == "DEEP_ARCHIVE" and tier is RestoreTier.BULK:
        return 4 * 3600.0
    return 3600.0


def classify(storage_class: str | None, restore_header: str | None = None) -> ObjectState:
    """State of an object from its storage class and ``x-amz-restore`` header."""
    if (storage_class or "STANDARD") not in ARCHIVE_CLASSES:
        return ObjectState.READABLE
    ongoing, _ = parse_restore_header(restore_header)
    if ongoing is None:
        return ObjectState.COLD
    return ObjectState.RESTORING if ongoing else ObjectState.RESTORED


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


def request_count_for_download(size: int, multipart_threshold: int, part_size: int) -> int:
    """GET requests the engine makes to download an object of ``size`` bytes."""
    if size < multipart_threshold or size == 0:
        return 1
    return -(-size // fit_part_size(size, part_size))


def parse_duration(text: str | float) -> float:
    """``"1s"``, ``"90"``, ``"5m"``, ``"2h"``, ``"1d"`` -> seconds (positive)."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*", text.lower())
        if not m:
            raise InvalidConfig(
                f"invalid duration {text!r}", hint="use a number with s, m, h or d, e.g. 30s, 1h"
            )
        unit = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": DAY}[m.group(2) or "s"]
        value = float(m.group(1)) * unit
    if value <= 0:
        raise InvalidConfig(f"duration must be positive, got {text!r}")
    return value


# -- prices and cost estimate -------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A dated price list (``fastxfer/data/prices.json`` or ``--prices FILE``); USD."""

    region: str
    date: str
    source: str
    restore: Mapping[str, Mapping[str, Mapping[str, float]]]
    """class -> tier -> {"per_1000_requests", "per_gb"}."""
    requests: Mapping[str, float]
    """"GET_per_1000", "HEAD_per_1000", "LIST_per_1000"."""
    restored_copy_per_gb_month: float
    transfer_out_per_gb: float
    currency: str = "USD"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> PriceTable:
        """The shipped table, or the JSON file at ``path``."""
        try:
            if path is None:
                text = resources.files("fastxfer").joinpath("data/prices.json").read_text("utf-8")
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            raw = json.loads(text)
            return cls(
                region=str(raw["region"]),
                date=str(raw["date"]),
                source=str(raw["source"]),
                restore=raw["restore"],
                requests=raw["requests"],
                restored_copy_per_gb_month=float(raw["restored_copy_per_gb_month"]),
                transfer_out_per_gb=float(raw["transfer_out_per_gb"]),
                currency=str(raw.get("currency", "USD")),
            )
        except OSError as exc:
            raise LocalFileError(f"cannot read price table {path}: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidConfig(
                f"price table {path or 'fastxfer/data/prices.json'} is malformed: {exc!r}",
                hint="see fastxfer/data/prices.json for the expected fields",
            ) from exc

    def restore_price(self, storage_class: str, tier: RestoreTier) -> Mapping[str, float]:
        try:
            return self.restore[storage_class][tier.value]
        except KeyError:
            raise InvalidConfig(
                f"price table has no {tier.value} price for {storage_class}",
                hint="add it to the --prices file",
            ) from None


@dataclass(frozen=True, slots=True)
class TierEstimate:
    """Objects of one storage class restored with one tier."""

    storage_class: str
    tier: str
    objects: int
    bytes: int
    price: float
    """Retrieval requests + per-GB retrieval + the restored copy's storage, USD."""


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """S3 requests of a job, by kind."""

    restore: int = 0
    list: int = 0
    head: int = 0
    get: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "RestoreObject": self.restore,
            "LIST": self.list,
            "HEAD": self.head,
            "GET": self.get,
        }


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What a job will do and cost (``--dry-run``).

    RestoreObject, GET and the download HEADs are exact for the current state;
    LIST/HEAD polling is an estimate from the tier's typical completion time.
    """

    tiers: tuple[TierEstimate, ...]
    requests: RequestCounts
    inventory: RequestCounts
    """Requests made to classify the objects (included in ``requests``)."""
    polls_estimated: int
    objects: int
    objects_readable: int
    objects_restoring: int
    objects_restored: int
    objects_downloaded: int
    download_bytes: int
    price_restore: float
    price_requests: float
    price_transfer_out: float
    """Internet egress if downloaded outside AWS (0 inside the region)."""
    prices_date: str
    prices_source: str
    prices_region: str

    @property
    def total_price(self) -> float:
        """USD, excluding egress."""
        return self.price_restore + self.price_requests

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requests"] = self.requests.to_dict()
        d["inventory"] = self.inventory.to_dict()
        d["total_price"] = round(self.total_price, 6)
        return d


# -- persisted state ------------------------------------------------------------


@dataclass(slots=True)
class _Obj:
    seq: int
    key: str
    size: int
    storage_class: str
    etag: str
    state: ObjectState
    requested_at: float | None = None
    expiry: float | None = None
    downloaded: bool = False
    thawed_seen_at: float | None = None
    download_started_at: float | None = None
    download_finished_at: float | None = None
    local: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """One object of a job.  ``*_at`` times: POSIX seconds for ``requested_at``
    and ``expiry``; the job clock's monotonic seconds for ``thawed_seen_at``
    (when a poll first saw it readable) and ``download_*_at``."""

    key: str
    size: int
    storage_class: str
    state: str
    requested_at: float | None
    expiry: float | None
    thawed_seen_at: float | None
    download_started_at: float | None
    download_finished_at: float | None
    downloaded: bool
    local: str | None
    error: str | None


class RestoreStore:
    """The job's sqlite file: its spec and one row per object.

    Each state change is committed at once (WAL, synchronous=NORMAL: no fsync
    per row, and a crash loses at most the last few changes, which the next
    run repeats harmlessly: a second RestoreObject gets 409 or 200).
    """

    SCHEMA: Final = """
        CREATE TABLE IF NOT EXISTS job (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            spec TEXT NOT NULL, tier TEXT NOT NULL, days INTEGER NOT NULL,
            created_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS objects (
            seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
            storage_class TEXT NOT NULL, etag TEXT NOT NULL, state TEXT NOT NULL,
            requested_at REAL, expiry REAL, downloaded INTEGER NOT NULL DEFAULT 0);
    """

    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(self.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LocalFileError(
                f"cannot open restore state {path}: {exc}", hint="choose another file with --state"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def spec(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT spec, tier, days FROM job").fetchone()
        if row is None:
            return None
        spec: dict[str, Any] = json.loads(row[0])
        spec["tier"], spec["days"] = row[1], row[2]
        return spec

    def create(self, spec: Mapping[str, Any], tier: str, days: int, objs: Sequence[_Obj]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO job (id, spec, tier, days, created_at) VALUES (1, ?, ?, ?, ?)",
                (json.dumps(spec, sort_keys=True), tier, days, time.time()),
            )
            self._db.executemany(
                "INSERT INTO objects (seq, key, size, storage_class, etag, state, requested_at,"
                " expiry, downloaded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.seq,
                        o.key,
                        o.size,
                        o.storage_class,
                        o.etag,
                        o.state.value,
                        o.requested_at,
                        o.expiry,
                        int(o.downloaded),
                    )
                    for o in objs
                ],
            )

    def load(self) -> list[_Obj]:
        rows = self._db.execute(
            "SELECT seq, key, size, storage_class, etag, state, requested_at, expiry, downloaded"
            " FROM objects ORDER BY seq"
        ).fetchall()
        return [
            _Obj(r[0], r[1], r[2], r[3], r[4], ObjectState(r[5]), r[6], r[7], bool(r[8]))
            for r in rows
        ]

    def save(self, o: _Obj) -> None:
        self._db.execute(
            "UPDATE objects SET state = ?, requested_at = ?, expiry = ?, downloaded = ?"
            " WHERE seq = ?",
            (o.state.value, o.requested_at, o.expiry, int(o.downloaded), o.seq),
        )


def default_state_path(spec: Mapping[str, Any]) -> str:
    """``<user cache dir>/fastxfer/restore/<bucket>-<hash of the spec>.sqlite``."""
    import platformdirs

    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(spec.get("bucket", "job")))
    return os.path.join(
        platformdirs.user_cache_dir("fastxfer"), "restore", f"{name}-{digest}.sqlite"
    )


# -- the job --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RestoreOptions:
    """What to restore and how.  Times in seconds, sizes in bytes.

    Give ``keys`` (restored, polled and downloaded in this order) or ``prefix``
    (every object under it, in key order).
    """

    bucket: str
    keys: tuple[str, ...] = ()
    prefix: str | None = None
    tier: RestoreTier = RestoreTier.STANDARD
    days: int = 7
    """How long the restored copy lasts (AWS rounds up to midnight UTC)."""
    tps: float = 50.0
    """RestoreObject requests per second (0: no cap).

    50/s asks for 180,000 objects an hour, small next to restore times of
    hours; measured on a 2-core machine against the moto test server, 100/s
    thawed objects faster than they could be downloaded (the machine was
    saturated while requests and downloads overlapped) and downloads started
    up to 2 s after their thaw was seen, against 1 s at 50/s.  Raise it for
    millions of objects on a big machine.
    """
    poll_interval: float | None = None
    """Seconds between polls (None: :func:`default_poll_interval`)."""
    download_dir: str | None = None
    """Download every object here as it thaws (key relative to ``prefix``)."""
    state_path: str | None = None
    """sqlite state file (None: :func:`default_state_path`)."""
    extend_margin: float = DAY
    """Re-issue RestoreObject when a copy not yet downloaded expires within this."""
    max_poll_failures: int = 5
    """Consecutive failed polls before the job gives up."""

    def __post_init__(self) -> None:
        if not self.bucket:
            raise InvalidConfig("a restore job needs a bucket")
        if bool(self.keys) == (self.prefix is not None):
            raise InvalidConfig(
                "a restore job takes either keys or a prefix",
                hint="give s3://bucket/prefix/ or one or more s3://bucket/key",
            )
        if len(set(self.keys)) != len(self.keys):
            raise InvalidConfig("the same key is listed twice")
        if not 1 <= self.days <= 36500:
            raise InvalidConfig(f"--days must be between 1 and 36500, got {self.days}")
        if self.tps < 0:
            raise InvalidConfig(f"--tps must not be negative, got {self.tps}")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise InvalidConfig(f"poll interval must be positive, got {self.poll_interval}")

    def spec(self) -> dict[str, Any]:
        """What identifies the job (the state file must match it)."""
        return {"bucket": self.bucket, "prefix": self.prefix, "keys": list(self.keys)}


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """Result of :meth:`RestoreJob.run` or :meth:`RestoreJob.status`."""

    bucket: str
    tier: str
    days: int
    state_path: str
    resumed: bool
    objects: tuple[ObjectStatus, ...]
    requests: RequestCounts
    """Requests this run made (all kinds), counted by the job."""
    restore_extensions: int
    polls: int
    poll_mode: str
    """"list" (ListObjectsV2 RestoreStatus) or "head" (fallback)."""
    elapsed: float
    """Seconds on the job clock."""

    def count(self, state: ObjectState) -> int:
        return sum(1 for o in self.objects if o.state == state.value)

    @property
    def failed(self) -> tuple[ObjectStatus, ...]:
        return tuple(o for o in self.objects if o.error)

    @property
    def downloaded(self) -> int:
        return sum(1 for o in self.objects if o.downloaded)

    def to_dict(self, *, per_object: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bucket": self.bucket,
            "tier": self.tier,
            "days": self.days,
            "state_path": self.state_path,
            "resumed": self.resumed,
            "objects": len(self.objects),
            "by_state": {s.value: self.count(s) for s in ObjectState},
            "downloaded": self.downloaded,
            "failed": len(self.failed),
            "requests": self.requests.to_dict(),
            "restore_extensions": self.restore_extensions,
            "polls": self.polls,
            "poll_mode": self.poll_mode,
            "seconds": round(self.elapsed, 3),
            "errors": [{"key": o.key, "error": o.error} for o in self.failed],
        }
        if per_object:
            d["per_object"] = [asdict(o) for o in self.objects]
        return d


class _ReadyQueue:
    """Objects ready to download, served in the order requested (lowest seq first)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, _Obj]] = []
        self._event = asyncio.Event()
        self._closed = False

    def put(self, obj: _Obj) -> None:
        heapq.heappush(self._heap, (obj.seq, obj))
        self._event.set()

    def close(self) -> None:
        self._closed = True
        self._event.set()

    async def get(self) -> _Obj | None:
        while True:
            if self._heap:
                return heapq.heappop(self._heap)[1]
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()


_FATAL = (BadCredentials, EndpointUnreachable)


class RestoreJob:
    """One batch restore (see the module docstring).  Use inside ``async with tm``.

    ``clock`` paces polls and the request-rate cap (inject a FakeClock in
    tests); state changes are persisted as they happen.
    """

    def __init__(
        self,
        tm: TransferManager,
        options: RestoreOptions,
        *,
        clock: Clock | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.tm = tm
        self.options = options
        self.clock: Clock = clock or SystemClock()
        self.prices = prices
        self.state_path = options.state_path or default_state_path(options.spec())
        self._objs: list[_Obj] = []
        self._counts = {"restore": 0, "list": 0, "head": 0, "get": 0}
        self._extensions = 0
        self._polls = 0
        self._list_ok = True
        self._resumed = False
        self._store: RestoreStore | None = None

    # -- inventory ---------------------------------------------------------

    async def _inventory(self) -> list[_Obj]:
        o = self.options
        objs: list[_Obj] = []
        if o.prefix is not None:
            token: str | None = None
            while True:
                kw: dict[str, Any] = {
                    "Prefix": o.prefix,
                    "OptionalObjectAttributes": ["RestoreStatus"],
                }
                if token:
                    kw["ContinuationToken"] = token
                r = await self.tm.request("list_objects_v2", bucket=o.bucket, what="LIST", **kw)
                self._counts["list"] += 1
                for item in r.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/") and int(item.get("Size", 0)) == 0:
                        continue  # folder marker
                    sc = str(item.get("StorageClass") or "STANDARD")
                    state, expiry = self._state_from_list(sc, item.get("RestoreStatus"))
                    objs.append(
                        _Obj(
                            len(objs),
                            key,
                            int(item.get("Size", 0)),
                            sc,
                            str(item.get("ETag", "")),
                            state,
                            expiry=expiry,
                        )
                    )
                token = r.get("NextContinuationToken")
                if not r.get("IsTruncated") or not token:
                    break
            if not objs:
                raise UsageError(f"no objects under s3://{o.bucket}/{o.prefix}")
            return objs

        async def head(seq: int, key: str) -> _Obj:
            info = await self.tm.head(o.bucket, key)
            self._counts["head"] += 1
            _, expiry = parse_restore_header(info.restore)
            state = classify(info.storage_class, info.restore)
            return _Obj(seq, key, info.size, info.storage_class, info.etag, state, expiry=expiry)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(head(i, k)) for i, k in enumerate(o.keys)]
        return [t.result() for t in tasks]

    @staticmethod
    def _state_from_list(sc: str, rs: Mapping[str, Any] | None) -> tuple[ObjectState, float | None]:
        if sc not in ARCHIVE_CLASSES:
            return ObjectState.READABLE, None
        if rs is None:
            # Never restored (AWS omits it) or the server ignores the option:
            # either way a RestoreObject answers correctly (202, 409 or 200).
            return ObjectState.COLD, None
        if rs.get("IsRestoreInProgress"):
            return ObjectState.RESTORING, None
        return ObjectState.RESTORED, _timestamp(rs.get("RestoreExpiryDate"))

    async def _load(self, *, create: bool) -> None:
        """Load the job from the state file, or take the inventory (and save it)."""
        store = (
            RestoreStore(self.state_path) if (create or os.path.exists(self.state_path)) else None
        )
        self._store = store
        spec = store.spec() if store else None
        if spec is not None:
            if {k: spec.get(k) for k in ("bucket", "prefix", "keys")} != self.options.spec():
                raise UsageError(
                    f"state file {self.state_path} belongs to another restore job "
                    f"(s3://{spec.get('bucket')}/{spec.get('prefix') or ''} ...)",
                    hint="choose another --state file, or delete it to start afresh",
                )
            self._objs = store.load() if store else []
            self._resumed = True
            now = self._wall()
            for obj in self._objs:
                if obj.state is ObjectState.RESTORED and obj.expiry and obj.expiry <= now:
                    obj.state = ObjectState.COLD  # the copy is gone: request again
                    obj.requested_at = None
                    self._save(obj)
            return
        self._objs = await self._inventory()
        for obj in self._objs:
            if self._needs_restore(obj):
                check_tier(obj.storage_class, self.options.tier)  # before anything is sent
        if store is not None:
            store.create(
                self.options.spec(), self.options.tier.value, self.options.days, self._objs
            )

    # -- helpers -------------------------------------------------------------

    def _wall(self) -> float:
        return self.clock.now().timestamp()

    def _save(self, obj: _Obj) -> None:
        if self._store is not None:
            self._store.save(obj)

    def _dest(self, obj: _Obj) -> str:
        assert self.options.download_dir is not None
        rel = obj.key
        if self.options.prefix:
            rel = rel[len(self.options.prefix) :]
        parts = rel.lstrip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise LocalFileError(
                f"key {obj.key!r} cannot be saved safely under {self.options.download_dir}",
                hint="download it alone with `fastxfer cp`",
            )
        return os.path.join(self.options.download_dir, *parts)

    def _already_downloaded(self, obj: _Obj) -> bool:
        """The file is in place with the object's size (from this run or an earlier one)."""
        if self.options.download_dir is None:
            return False
        try:
            dest = self._dest(obj)
            return os.path.isfile(dest) and os.path.getsize(dest) == obj.size
        except (OSError, LocalFileError):
            return False

    def _needs_restore(self, obj: _Obj) -> bool:
        return obj.state is ObjectState.COLD and not self._already_downloaded(obj)

    def _wants_download(self, obj: _Obj) -> bool:
        return self.options.download_dir is not None and not self._already_downloaded(obj)

    def _interval(self) -> float:
        if self.options.poll_interval is not None:
            return self.options.poll_interval
        classes = {o.storage_class for o in self._objs if o.state is ObjectState.RESTORING}
        tier = self.options.tier
        return min((default_poll_interval(sc, tier) for sc in classes), default=60.0)

    # -- estimate ------------------------------------------------------------------

    async def estimate(self) -> CostEstimate:
        """Classify the objects (LIST or HEAD) and price the job; requests nothing else.

        Reads an existing state file but never writes one.
        """
        await self._load(create=False)
        inventory = self._snapshot_counts()
        try:
            return self._estimate(inventory)
        finally:
            self._close()

    def _estimate(self, inventory: RequestCounts) -> CostEstimate:
        o, cfg = self.options, self.tm.config
        prices = self.prices or PriceTable.load()
        groups: dict[tuple[str, RestoreTier], list[_Obj]] = {}
        for obj in self._objs:
            if self._needs_restore(obj):
                check_tier(obj.storage_class, o.tier)
                groups.setdefault((obj.storage_class, o.tier), []).append(obj)
        tiers: list[TierEstimate] = []
        price_restore = 0.0
        for (sc, tier), objs in sorted(groups.items()):
            p = prices.restore_price(sc, tier)
            nbytes = sum(x.size for x in objs)
            gb = nbytes / GB
            price = (
                len(objs) / 1000 * p["per_1000_requests"]
                + gb * p["per_gb"]
                + gb * prices.restored_copy_per_gb_month * o.days / 30
            )
            price_restore += price
            tiers.append(TierEstimate(sc, tier.value, len(objs), nbytes, price))
        waiting = [
            x for x in self._objs if self._needs_restore(x) or x.state is ObjectState.RESTORING
        ]
        polls = 0
        list_requests = inventory.list
        head_requests = inventory.head
        if waiting:
            expected = max(
                EXPECTED_RESTORE_SECONDS.get((x.storage_class, o.tier), 0.0) for x in waiting
            )
            interval = o.poll_interval or min(
                default_poll_interval(x.storage_class, o.tier) for x in waiting
            )
            polls = math.ceil(expected / interval) + 1
            list_requests += polls * math.ceil(len(waiting) / LIST_PAGE_SIZE)
        downloads = [x for x in self._objs if self._wants_download(x)]
        gets = sum(
            request_count_for_download(x.size, cfg.multipart_threshold, cfg.part_size)
            for x in downloads
        )
        # The engine HEADs before a ranged download; a small object (size known
        # from the LIST) comes in one GET without a HEAD.
        head_requests += sum(1 for x in downloads if x.size >= cfg.multipart_threshold)
        download_bytes = sum(x.size for x in downloads)
        restore_requests = sum(len(v) for v in groups.values())
        rq = prices.requests
        price_requests = (
            gets / 1000 * rq.get("GET_per_1000", 0.0)
            + head_requests / 1000 * rq.get("HEAD_per_1000", 0.0)
            + list_requests / 1000 * rq.get("LIST_per_1000", 0.0)
        )
        egress = (
            download_bytes / GB * prices.transfer_out_per_gb if cfg.endpoint_url is None else 0.0
        )
        return CostEstimate(
            tiers=tuple(tiers),
            requests=RequestCounts(restore_requests, list_requests, head_requests, gets),
            inventory=inventory,
            polls_estimated=polls,
            objects=len(self._objs),
            objects_readable=sum(1 for x in self._objs if x.state is ObjectState.READABLE),
            objects_restoring=sum(1 for x in self._objs if x.state is ObjectState.RESTORING),
            objects_restored=sum(1 for x in self._objs if x.state is ObjectState.RESTORED),
            objects_downloaded=sum(1 for x in self._objs if self._already_downloaded(x)),
            download_bytes=download_bytes,
            price_restore=price_restore,
            price_requests=price_requests,
            price_transfer_out=egress,
            prices_date=prices.date,
            prices_source=prices.source,
            prices_region=prices.region,
        )

    # -- run -----------------------------------------------------------------------

    async def run(self) -> RestoreReport:
        """Request, poll and (with ``download_dir``) download until every object is done.

        Per-object failures (access denied, a failed download) are recorded in
        the report; credential and connection failures abort the job.
        """
        started = self.clock.monotonic()
        try:
            await self._load(create=True)
            ready = _ReadyQueue()
            requests_done = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                if self.options.download_dir is not None:
                    for obj in self._objs:
                        if obj.state in (ObjectState.READABLE, ObjectState.RESTORED):
                            self._offer(obj, ready)
                    workers = min(self.tm.config.active_transfers, max(1, len(self._objs)))
                    for _ in range(workers):
                        tg.create_task(self._download_worker(ready))
                tg.create_task(self._request_all(requests_done))
                try:
                    await self._poll_until_done(requests_done, ready)
                finally:
                    ready.close()
            return self._report(started)
        finally:
            self._close()

    async def status(self) -> RestoreReport:
        """Load the job from its state file and poll once (no restore, no download)."""
        if not os.path.exists(self.state_path):
            raise UsageError(
                f"no restore job state at {self.state_path}",
                hint="start the job with `fastxfer restore` (or pass the same --state)",
            )
        started = self.clock.monotonic()
        try:
            await self._load(create=False)
            if any(o.state is ObjectState.RESTORING for o in self._objs):
                await self._poll_once(None)
            return self._report(started)
        finally:
            self._close()

    def objects(self) -> tuple[ObjectStatus, ...]:
        return tuple(self._status(o) for o in self._objs)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _snapshot_counts(self) -> RequestCounts:
        c = self._counts
        return RequestCounts(c["restore"], c["list"], c["head"], c["get"])

    def _status(self, o: _Obj) -> ObjectStatus:
        return ObjectStatus(
            key=o.key,
            size=o.size,
            storage_class=o.storage_class,
            state=o.state.value,
            requested_at=o.requested_at,
            expiry=o.expiry,
            thawed_seen_at=o.thawed_seen_at,
            download_started_at=o.download_started_at,
            download_finished_at=o.download_finished_at,
            downloaded=o.downloaded or self._already_downloaded(o),
            local=o.local,
            error=o.error,
        )

    def _report(self, started: float) -> RestoreReport:
        return RestoreReport(
            bucket=self.options.bucket,
            tier=self.options.tier.value,
            days=self.options.days,
            state_path=self.state_path,
            resumed=self._resumed,
            objects=self.objects(),
            requests=self._snapshot_counts(),
            restore_extensions=self._extensions,
            polls=self._polls,
            poll_mode="list" if self._list_ok else "head",
            elapsed=self.clock.monotonic() - started,
        )

    # -- requesting ------------------------------------------------------------------

    async def _request_all(self, done: asyncio.Event) -> None:
        """One RestoreObject per cold object, in order, ``tps`` per second at most."""
        try:
            todo = iter([o for o in self._objs if self._needs_restore(o)])
            tps = self.options.tps
            limiter = RequestRateLimiter(tps, max(1, math.ceil(tps)), self.clock) if tps else None

            async def sender() -> None:
                for obj in todo:
                    if limiter is not None:
                        await limiter.acquire()
                    await self._restore(obj)

            senders = min(self.tm.config.max_concurrency, 64)
            async with asyncio.TaskGroup() as tg:
                for _ in range(senders):
                    tg.create_task(sender())
        finally:
            done.set()

    async def _restore(self, obj: _Obj, *, extend: bool = False) -> None:
        o = self.options
        self._counts["restore"] += 1
        try:
            await self.tm.request(
                "restore_object",
                bucket=o.bucket,
                key=obj.key,
                priority=Priority.DATA + 1,  # thawed data first: it is what the user waits for
                what="RestoreObject",
                RestoreRequest={"Days": o.days, "GlacierJobParameters": {"Tier": o.tier.value}},
            )
        except ColdObject as exc:
            if exc.code != "InvalidObjectState":
                raise
            # "Restore is not allowed for the object's current storage class":
            # it moved to an online class since the inventory.
            obj.state = ObjectState.READABLE
            self._save(obj)
            return
        except _FATAL:
            raise
        except S3Error as exc:
            if exc.code != "RestoreAlreadyInProgress":
                obj.error = str(exc)
                return
        # 202 accepted, 409 already in progress, 200 copy already there (expiry
        # extended): all mean "requested"; the poller finds out when it is readable.
        if extend:
            self._extensions += 1
            obj.expiry = self._wall() + o.days * DAY
        else:
            obj.state = ObjectState.RESTORING
            obj.requested_at = self._wall()
        obj.error = None
        self._save(obj)

    # -- polling -------------------------------------------------------------------

    async def _poll_until_done(self, requests_done: asyncio.Event, ready: _ReadyQueue) -> None:
        failures = 0
        first = True
        while True:
            waiting = any(o.state is ObjectState.RESTORING for o in self._objs)
            if not waiting and requests_done.is_set():
                await self._extend_expiring()
                return
            if not first:
                await self._sleep_or_done(self._interval(), requests_done, waiting)
            first = False
            if not any(o.state is ObjectState.RESTORING for o in self._objs):
                continue
            try:
                await self._poll_once(ready)
                failures = 0
            except _FATAL:
                raise
            except (S3Error, TransferFailed) as exc:
                failures += 1
                log.warning("restore poll failed (%d in a row): %s", failures, exc)
                if failures >= self.options.max_poll_failures:
                    raise
            await self._extend_expiring()

    async def _sleep_or_done(self, interval: float, done: asyncio.Event, waiting: bool) -> None:
        """Sleep one interval; if nothing is restoring yet, wake early once requests are done."""
        if waiting or done.is_set():
            await self.clock.sleep(interval)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(interval))
        waiter = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waiter):
                t.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)

    async def _poll_once(self, ready: _ReadyQueue | None) -> None:
        self._polls += 1
        restoring = [o for o in self._objs if o.state is ObjectState.RESTORING]
        if self._list_ok:
            unknown = await self._poll_list(restoring, ready)
            if not unknown:
                return
            # An object known to be restoring came back without RestoreStatus:
            # the server ignores OptionalObjectAttributes; HEAD from now on.
            log.info("server does not report RestoreStatus in LIST; polling with HEAD")
            self._list_ok = False
            restoring = unknown
        await self._poll_head(restoring, ready)

    async def _poll_list(self, restoring: list[_Obj], ready: _ReadyQueue | None) -> list[_Obj]:
        """One LIST walk over the keys still restoring; returns those it could not report."""
        if not restoring:
            return []
        by_key = {o.key: o for o in restoring}
        keys = sorted(by_key)
        first, last = keys[0], keys[-1]
        # Common string prefix (not path components) of the sorted keys.
        n = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), None)
        prefix = first[: min(len(first), len(last)) if n is None else n]
        # The job knows every key: ask for exactly the keys from `first` to
        # `last`, not a full page (a server builds and we parse less XML).
        all_keys = sorted(o.key for o in self._objs)
        span = bisect.bisect_right(all_keys, last) - bisect.bisect_left(all_keys, first)
        seen: set[str] = set()
        token: str | None = None
        while True:
            kw: dict[str, Any] = {
                "Prefix": prefix,
                "OptionalObjectAttributes": ["RestoreStatus"],
                "MaxKeys": max(1, min(LIST_PAGE_SIZE, span)),
            }
            if token:
                kw["ContinuationToken"] = token
            else:
                kw["StartAfter"] = first[:-1]  # exclusive: the walk starts at `first`
            r = await self.tm.request(
                "list_objects_v2", bucket=self.options.bucket, what="LIST restore status", **kw
            )
            self._counts["list"] += 1
            contents = r.get("Contents", [])
            for item in contents:
                obj = by_key.get(item["Key"])
                rs = item.get("RestoreStatus")
                if obj is None or rs is None:
                    continue
                seen.add(obj.key)
                if not rs.get("IsRestoreInProgress"):
                    self._thawed(obj, _timestamp(rs.get("RestoreExpiryDate")), ready)
            token = r.get("NextContinuationToken")
            if not r.get("IsTruncated") or not token:
                break
            if contents and contents[-1]["Key"] >= last:
                break
        return [o for o in restoring if o.key not in seen]

    async def _poll_head(self, objs: list[_Obj], ready: _ReadyQueue | None) -> None:
        async def one(obj: _Obj) -> None:
            try:
                info = await self.tm.head(self.options.bucket, obj.key)
            except _FATAL:
                raise
            except S3Error as exc:
                obj.error = str(exc)
                return
            finally:
                self._counts["head"] += 1
            state = classify(info.storage_class, info.restore)
            if state in (ObjectState.RESTORED, ObjectState.READABLE):
                self._thawed(obj, parse_restore_header(info.restore)[1], ready)

        async with asyncio.TaskGroup() as tg:
            for obj in objs:
                tg.create_task(one(obj))

    def _thawed(self, obj: _Obj, expiry: float | None, ready: _ReadyQueue | None) -> None:
        obj.state = ObjectState.RESTORED
        obj.expiry = expiry
        obj.thawed_seen_at = self.clock.monotonic()
        self._save(obj)
        if ready is not None:
            self._offer(obj, ready)

    def _offer(self, obj: _Obj, ready: _ReadyQueue) -> None:
        if self._wants_download(obj):
            ready.put(obj)
        else:
            self._mark_downloaded(obj)

    def _mark_downloaded(self, obj: _Obj) -> None:
        if self.options.download_dir is not None and not obj.downloaded:
            obj.downloaded = True
            obj.local = self._dest(obj)
            self._save(obj)

    async def _extend_expiring(self) -> None:
        """Re-issue RestoreObject for copies that expire before they are downloaded."""
        if self.options.download_dir is None:
            return
        limit = self._wall() + self.options.extend_margin
        expiring = [
            o
            for o in self._objs
            if o.state is ObjectState.RESTORED
            and not o.downloaded
            and o.expiry is not None
            and o.expiry < limit
        ]
        for obj in expiring:
            await self._restore(obj, extend=True)

    # -- downloading ---------------------------------------------------------------

    async def _download_worker(self, ready: _ReadyQueue) -> None:
        while (obj := await ready.get()) is not None:
            if not self._wants_download(obj):
                self._mark_downloaded(obj)
                continue
            try:
                dest = self._dest(obj)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
            except LocalFileError as exc:
                obj.error = str(exc)
                continue
            except OSError as exc:
                obj.error = f"{exc.filename}: {exc.strerror}"
                continue
            obj.download_started_at = self.clock.monotonic()
            handle = self.tm.download(self.options.bucket, obj.key, dest, size_hint=obj.size)
            try:
                await handle
            except _FATAL:
                raise
            except FastxferError as exc:
                obj.error = str(exc)
                continue
            finally:
                # What the engine really sent for this download.
                sent = handle.stats().requests
                self._counts["head"] += sent.get("head_object", 0)
                self._counts["get"] += sent.get("get_object", 0)
            obj.download_finished_at = self.clock.monotonic()
            obj.error = None
            self._mark_downloaded(obj)


def summarize_estimate(est: CostEstimate) -> str:
    """Human text for ``--dry-run``."""
    lines = [
        f"{est.objects} objects: {est.objects_readable} readable now, "
        f"{est.objects_restored} already restored, {est.objects_restoring} restoring, "
        f"{sum(t.objects for t in est.tiers)} to restore, "
        f"{est.objects_downloaded} already downloaded"
    ]
    lines.extend(
        f"  {t.storage_class:<12} {t.tier:<9} {t.objects:>8} objects "
        f"{t.bytes:>16,} bytes  ${t.price:,.4f}"
        for t in est.tiers
    )
    r = est.requests
    lines += [
        f"requests: RestoreObject {r.restore}, GET {r.get}, HEAD {r.head}, LIST {r.list} "
        f"(LIST includes ~{est.polls_estimated} polls, an estimate)",
        f"price: restore ${est.price_restore:,.4f} + requests ${est.price_requests:,.4f} "
        f"= ${est.total_price:,.4f}"
        + (f" (+ ${est.price_transfer_out:,.4f} egress)" if est.price_transfer_out else ""),
        f"prices: {est.prices_region}, {est.prices_date}, {est.prices_source}",
    ]
    return "\n".join(lines)


def summarize_report(rep: RestoreReport) -> str:
    """Human text for the end of a run."""
    states = ", ".join(f"{rep.count(s)} {s.value}" for s in ObjectState if rep.count(s))
    r = rep.requests
    text = (
        f"{len(rep.objects)} objects ({states}); {rep.downloaded} downloaded, "
        f"{len(rep.failed)} failed\n"
        f"requests made: RestoreObject {r.restore} ({rep.restore_extensions} extensions), "
        f"GET {r.get}, HEAD {r.head}, LIST {r.list}; {rep.polls} polls ({rep.poll_mode}) "
        f"in {rep.elapsed:.1f} s\nstate: {rep.state_path}"
    )
    for o in rep.failed[:20]:
        text += f"\n  {o.key}: {o.error}"
    return text


__all__ = [
    "CostEstimate",
    "ObjectState",
    "ObjectStatus",
    "PriceTable",
    "RequestCounts",
    "RestoreJob",
    "RestoreOptions",
    "RestoreReport",
    "RestoreStore",
    "RestoreTier",
    "TierEstimate",
    "check_tier",
    "classify",
    "default_poll_interval",
    "default_state_path",
    "parse_duration",
    "parse_restore_header",
    "summarize_estimate",
    "summarize_report",
]
