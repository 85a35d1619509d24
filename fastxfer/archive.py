"""Archive older backups: move data to a cold class on the server, knowing duplicity's chains.

``plan_archive`` reads a listing (no data), groups duplicity's files into
chains (a full backup and the incrementals that follow it), keeps the newest
``keep_full`` chains as they are, and picks the **data volumes** of older
chains to move to the archive class.  Manifests, signatures and jsonstat files
never move: duplicity reads them for every incremental, collection-status and
restore plan, and a restore announces the volumes it needs
(``pre_process_download_batch``), which the fastxfer backend thaws in one batch.
Plain prefixes (not duplicity's) archive by age instead (``older_than_days``).
Objects already in the target class are left alone, so a rerun is a no-op.

``run_archive`` moves them by server-side copy onto themselves
(:meth:`TransferManager.copy`: CopyObject up to 5 GiB, UploadPartCopy above),
under the manager's budget; no byte is read.

Costs come from the dated price table (``fastxfer/data/prices.json``):
monthly storage saving, the copy requests, and the early-deletion charge when
a retention would delete archived objects before the class's minimum storage
duration (GLACIER 90 days, DEEP_ARCHIVE 180, STANDARD_IA 30).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

from fastxfer.config import TransferConfig
from fastxfer.errors import FastxferError, InvalidConfig
from fastxfer.manager import TransferManager
from fastxfer.objectinfo import ObjectInfo
from fastxfer.planning import copy_part_size

GB: Final = 1024**3
"""AWS bills per GB of 2**30 bytes."""

_FULL_VOL = re.compile(r"duplicity-full\.(?P<t>[^./]+)\.vol(?P<n>\d+)\.difftar(?:$|\.)")
_INC_VOL = re.compile(
    r"duplicity-inc\.(?P<t1>[^./]+)\.to\.(?P<t2>[^./]+)\.vol(?P<n>\d+)\.difftar(?:$|\.)"
)
_FULL_ANY = re.compile(r"duplicity-full(?:-signatures)?\.(?P<t>[^./]+)\.")
_INC_ANY = re.compile(r"duplicity-(?:inc|new-signatures)\.(?P<t1>[^./]+)\.to\.(?P<t2>[^./]+)\.")


@dataclass(frozen=True, slots=True)
class DuplicityFile:
    """What a key says about itself in duplicity's naming (long names)."""

    key: str
    start: str | None
    """The chain link's start time (None for a full backup)."""
    end: str
    """The backup's time (a full's time, an incremental's end time)."""
    volume: int | None
    """The volume number for data volumes; None for manifests, signatures, jsonstat."""


def parse_duplicity_name(key: str) -> DuplicityFile | None:
    """Parse a key's last segment (any ``--file-prefix-*`` before ``duplicity-``)."""
    name = key.rsplit("/", 1)[-1]
    if m := _FULL_VOL.search(name):
        return DuplicityFile(key, None, m["t"], int(m["n"]))
    if m := _INC_VOL.search(name):
        return DuplicityFile(key, m["t1"], m["t2"], int(m["n"]))
    if m := _INC_ANY.search(name):
        return DuplicityFile(key, m["t1"], m["t2"], None)
    if m := _FULL_ANY.search(name):
        return DuplicityFile(key, None, m["t"], None)
    return None


@dataclass(slots=True)
class Chain:
    """A full backup and the incrementals that follow it."""

    full_time: str
    end_time: str
    volumes: list[ObjectInfo] = field(default_factory=list)
    metadata: list[ObjectInfo] = field(default_factory=list)


def duplicity_chains(objects: Iterable[ObjectInfo]) -> tuple[list[Chain], list[ObjectInfo]]:
    """Chains, oldest first, and the duplicity files that belong to no chain."""
    parsed = [(o, parse_duplicity_name(o.key)) for o in objects]
    chains: dict[str, Chain] = {}
    for o, f in parsed:
        if f is not None and f.start is None:
            chain = chains.setdefault(f.end, Chain(f.end, f.end))
            (chain.volumes if f.volume is not None else chain.metadata).append(o)
    incs = sorted(((o, f) for o, f in parsed if f is not None and f.start), key=lambda p: p[1].end)
    by_end = {c.end_time: c for c in chains.values()}
    orphans: list[ObjectInfo] = []
    for o, f in incs:
        assert f.start is not None
        # The link that starts where a chain ends, or a sibling file of a link
        # already added (same start and end).
        link = by_end.get(f.start) or by_end.get(f.end)
        if link is None:
            orphans.append(o)  # no full before it here: left alone
            continue
        chain = link
        (chain.volumes if f.volume is not None else chain.metadata).append(o)
        chain.end_time = max(chain.end_time, f.end)
        by_end[f.end] = chain
    # A full without its manifest was interrupted: duplicity does not count it as a
    # backup (it resumes or replaces it), so neither does archiving.
    complete = [c for c in chains.values() if any(_is_manifest(o.key) for o in c.metadata)]
    for c in chains.values():
        if c not in complete:
            orphans += c.volumes + c.metadata
    return sorted(complete, key=lambda c: c.full_time), orphans


def _is_manifest(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return ".manifest" in name and "duplicity-full." in name


@dataclass(slots=True)
class ArchivePlan:
    target: str
    move: list[ObjectInfo] = field(default_factory=list)
    kept_chains: list[Chain] = field(default_factory=list)
    archived_chains: list[Chain] = field(default_factory=list)
    already: int = 0
    """Objects already in the target class (not copied again)."""
    cold_source: list[ObjectInfo] = field(default_factory=list)
    """Objects in another archive class, which cannot be copied without a restore."""

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.move)


def plan_archive(
    objects: Sequence[ObjectInfo],
    target: str,
    *,
    keep_full: int | None = None,
    older_than_days: float | None = None,
    now: datetime | None = None,
) -> ArchivePlan:
    """What to move to ``target`` (see the module docstring); reads nothing."""
    if (keep_full is None) == (older_than_days is None):
        raise InvalidConfig("give exactly one of --keep-full and --older-than")
    plan = ArchivePlan(target)
    if keep_full is not None:
        if keep_full < 1:
            raise InvalidConfig("--keep-full must be at least 1 (the newest chain stays)")
        chains, _ = duplicity_chains(objects)
        cut = max(0, len(chains) - keep_full)
        plan.archived_chains, plan.kept_chains = chains[:cut], chains[cut:]
        candidates = [v for c in plan.archived_chains for v in c.volumes]
    else:
        assert older_than_days is not None
        moment = now or datetime.now(UTC)
        candidates = [
            o
            for o in objects
            if o.last_modified is not None
            and (moment - o.last_modified).total_seconds() >= older_than_days * 86400
            and not o.key.endswith("/")
            and not _is_duplicity_metadata(o.key)
        ]
    for o in candidates:
        if o.storage_class == target:
            plan.already += 1
        elif o.is_cold:
            plan.cold_source.append(o)
        else:
            plan.move.append(o)
    return plan


def _is_duplicity_metadata(key: str) -> bool:
    f = parse_duplicity_name(key)
    return f is not None and f.volume is None


@dataclass(frozen=True, slots=True)
class ArchivePrices:
    """The parts of the dated price table archiving needs."""

    date: str
    source: str
    storage_per_gb_month: Mapping[str, float]
    minimum_storage_days: Mapping[str, int]
    copy_per_1000: Mapping[str, float]

    @classmethod
    def load(cls, path: str | None = None) -> ArchivePrices:
        if path is None:
            text = resources.files("fastxfer").joinpath("data/prices.json").read_text("utf-8")
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        raw: dict[str, Any] = json.loads(text)
        return cls(
            date=str(raw.get("date", "")),
            source=str(raw.get("source", "")),
            storage_per_gb_month=raw["storage_per_gb_month"],
            minimum_storage_days=raw["minimum_storage_days"],
            copy_per_1000=raw["copy_per_1000_requests"],
        )


@dataclass(frozen=True, slots=True)
class ArchiveCost:
    objects: int
    bytes: int
    copy_requests: int
    copy_price: float
    monthly_saving: float
    minimum_days: int
    early_deletion_charge: float
    """Charged if the retention deletes the objects before ``minimum_days`` (0 if not)."""


def estimate_archive(
    plan: ArchivePlan,
    prices: ArchivePrices,
    cfg: TransferConfig,
    *,
    delete_after_days: float | None = None,
    expiration: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> ArchiveCost:
    """Requests, monthly saving, and the early-deletion charge of a retention.

    ``delete_after_days``: your retention, counted from each backup's time
    (``remove-older-than``): an object already ``a`` days old is deleted
    ``delete_after_days - a`` days after it moves.  ``expiration``: lifecycle
    Expiration days per key; a copy starts that clock again, so the object
    lives that long after the move.  The requests are the ones the move
    sends: a HEAD per object, then one CopyObject up to ``copy_threshold``,
    else CreateMultipartUpload, one UploadPartCopy per part and a Complete.
    """
    target = plan.target
    storage = prices.storage_per_gb_month
    minimum = int(prices.minimum_storage_days.get(target, 0))
    moment = now or datetime.now(UTC)
    requests = 0
    saving = 0.0
    early = 0.0
    for o in plan.move:
        requests += 1  # HEAD
        if o.size <= cfg.copy_threshold:
            requests += 1
        else:
            requests += 2 + -(-o.size // copy_part_size(o.size, cfg))
        gb = o.size / GB
        saving += (storage.get(o.storage_class, storage["STANDARD"]) - storage[target]) * gb
        lives: list[float] = []
        if delete_after_days is not None:
            age = (moment - o.last_modified).total_seconds() / 86400 if o.last_modified else 0.0
            lives.append(delete_after_days - age)
        if expiration and o.key in expiration:
            lives.append(float(expiration[o.key]))
        if lives and min(lives) < minimum:
            early += gb * storage[target] * (minimum - max(0.0, min(lives))) / 30.0
    return ArchiveCost(
        objects=len(plan.move),
        bytes=plan.bytes,
        copy_requests=requests,
        copy_price=requests / 1000 * prices.copy_per_1000.get(target, 0.0),
        monthly_saving=saving,
        minimum_days=minimum,
        early_deletion_charge=early,
    )


@dataclass(slots=True)
class ArchiveResult:
    moved: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)


async def run_archive(tm: TransferManager, plan: ArchivePlan) -> ArchiveResult:
    """Copy every planned object onto itself in the target class, concurrently."""
    result = ArchiveResult()
    handles = [
        (o, tm.copy(o.bucket, o.key, o.bucket, o.key, storage_class=plan.target)) for o in plan.move
    ]
    for o, h in handles:
        try:
            await h
        except FastxferError as exc:
            result.failed.append((o.key, str(exc)))
        else:
            result.moved += 1
            result.bytes += o.size
        for op, n in h.stats().requests.items():
            result.requests[op] = result.requests.get(op, 0) + n
    return result


# -- lifecycle rules ---------------------------------------------------------


def lifecycle_rules(
    prefix: str,
    *,
    archive_prefix: str | None,
    transition_days: int | None,
    target: str,
    abort_days: int,
) -> list[dict[str, Any]]:
    """Rules that fit duplicity's layout: the archive prefix (volumes only, thanks to
    ``--file-prefix-archive``) transitions after ``transition_days``; incomplete
    multipart uploads under ``prefix`` are aborted after ``abort_days``.  Manifests
    and signatures are never matched by a transition."""
    rules: list[dict[str, Any]] = [
        {
            "ID": f"fastxfer-abort-incomplete:{prefix}",
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_days},
        }
    ]
    if transition_days is not None:
        if not archive_prefix:
            raise InvalidConfig(
                "a transition rule needs the volumes under their own prefix",
                hint="back up with --file-prefix-archive archive/ and pass --archive-prefix "
                "archive/, so manifests and signatures stay STANDARD",
            )
        rules.append(
            {
                "ID": f"fastxfer-transition:{prefix}{archive_prefix}",
                "Status": "Enabled",
                "Filter": {"Prefix": prefix + archive_prefix},
                "Transitions": [{"Days": transition_days, "StorageClass": target}],
            }
        )
    return rules


def merge_rules(
    existing: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The bucket's rules with ``new`` added, replacing only rules with the same ID."""
    ids = {r["ID"] for r in new}
    return [dict(r) for r in existing if r.get("ID") not in ids] + [dict(r) for r in new]


def expiration_days(rules: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, int]:
    """Key -> the shortest Expiration (days) of an enabled rule whose prefix covers it
    (keys no rule expires are left out)."""
    expiring: list[tuple[str, int]] = []
    for r in rules:
        if r.get("Status") != "Enabled" or "Days" not in (r.get("Expiration") or {}):
            continue
        flt = r.get("Filter") or {}
        prefix = flt.get("Prefix", (flt.get("And") or {}).get("Prefix", r.get("Prefix", "")))
        expiring.append((str(prefix or ""), int(r["Expiration"]["Days"])))
    out: dict[str, int] = {}
    for key in keys:
        days = [d for prefix, d in expiring if key.startswith(prefix)]
        if days:
            out[key] = min(days)
    return out
