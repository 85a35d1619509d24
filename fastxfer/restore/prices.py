"""Prices and the cost estimate of a restore job (``fastxfer restore --dry-run``).

:func:`estimate_cost` is a pure function of the objects' states and the
configuration: the download request counts come from
:func:`fastxfer.planning.download_get_count`, the function downloads plan their
ranges with, at the whole connection budget: what a run makes over a long path
(where the tuner uses the whole budget), and at most that on a short one
(fewer connections, larger ranges).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastxfer.errors import InvalidConfig, LocalFileError
from fastxfer.planning import download_get_count
from fastxfer.restore.model import (
    GB,
    LIST_PAGE_SIZE,
    ObjectRecord,
    ObjectState,
    RestoreTier,
    check_tier,
    default_poll_interval,
    expected_restore_seconds,
)

if TYPE_CHECKING:
    from fastxfer.config import TransferConfig


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

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> RequestCounts:
        """From requests counted by S3 operation name (``Session.request(counts=...)``)."""
        return cls(
            restore=counts.get("restore_object", 0),
            list=counts.get("list_objects_v2", 0),
            head=counts.get("head_object", 0),
            get=counts.get("get_object", 0),
        )

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


def estimate_cost(
    objects: Sequence[ObjectRecord],
    *,
    tier: RestoreTier,
    days: int,
    config: TransferConfig,
    prices: PriceTable,
    download: bool = False,
    downloaded: Collection[str] = frozenset(),
    poll_interval: float | None = None,
    inventory: RequestCounts | None = None,
) -> CostEstimate:
    """Requests and price of restoring (and with ``download``, downloading) ``objects``.

    ``downloaded``: keys whose file is already in place (neither restored nor
    downloaded again).  ``inventory``: requests already made to classify the
    objects, added to the counts.  Raises InvalidConfig for a tier that does
    not exist for a class, or a price the table lacks.
    """
    inventory = inventory or RequestCounts()
    cfg = config

    def needs_restore(x: ObjectRecord) -> bool:
        return x.state is ObjectState.COLD and x.key not in downloaded

    groups: dict[tuple[str, RestoreTier], list[ObjectRecord]] = {}
    for obj in objects:
        if needs_restore(obj):
            check_tier(obj.storage_class, tier)
            groups.setdefault((obj.storage_class, tier), []).append(obj)
    tiers: list[TierEstimate] = []
    price_restore = 0.0
    for (sc, t), objs in sorted(groups.items()):
        p = prices.restore_price(sc, t)
        nbytes = sum(x.size for x in objs)
        gb = nbytes / GB
        price = (
            len(objs) / 1000 * p["per_1000_requests"]
            + gb * p["per_gb"]
            + gb * prices.restored_copy_per_gb_month * days / 30
        )
        price_restore += price
        tiers.append(TierEstimate(sc, t.value, len(objs), nbytes, price))
    waiting = [x for x in objects if needs_restore(x) or x.state is ObjectState.RESTORING]
    polls = 0
    list_requests = inventory.list
    head_requests = inventory.head
    if waiting:
        expected = max(expected_restore_seconds(x.storage_class, tier) or 0.0 for x in waiting)
        interval = poll_interval or min(
            default_poll_interval(x.storage_class, tier) for x in waiting
        )
        polls = math.ceil(expected / interval) + 1
        list_requests += polls * math.ceil(len(waiting) / LIST_PAGE_SIZE)
    downloads = [x for x in objects if download and x.key not in downloaded]
    gets = sum(download_get_count(x.size, cfg) for x in downloads)
    # A download HEADs first unless it is small (size known from the
    # inventory): then one GET carries what the HEAD would have said.
    head_requests += sum(1 for x in downloads if x.size >= cfg.multipart_threshold)
    download_bytes = sum(x.size for x in downloads)
    restore_requests = sum(len(v) for v in groups.values())
    rq = prices.requests
    price_requests = (
        gets / 1000 * rq.get("GET_per_1000", 0.0)
        + head_requests / 1000 * rq.get("HEAD_per_1000", 0.0)
        + list_requests / 1000 * rq.get("LIST_per_1000", 0.0)
    )
    egress = download_bytes / GB * prices.transfer_out_per_gb if cfg.endpoint_url is None else 0.0
    return CostEstimate(
        tiers=tuple(tiers),
        requests=RequestCounts(restore_requests, list_requests, head_requests, gets),
        inventory=inventory,
        polls_estimated=polls,
        objects=len(objects),
        objects_readable=sum(1 for x in objects if x.state is ObjectState.READABLE),
        objects_restoring=sum(1 for x in objects if x.state is ObjectState.RESTORING),
        objects_restored=sum(1 for x in objects if x.state is ObjectState.RESTORED),
        objects_downloaded=sum(1 for x in objects if x.key in downloaded),
        download_bytes=download_bytes,
        price_restore=price_restore,
        price_requests=price_requests,
        price_transfer_out=egress,
        prices_date=prices.date,
        prices_source=prices.source,
        prices_region=prices.region,
    )


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


__all__ = [
    "CostEstimate",
    "PriceTable",
    "RequestCounts",
    "TierEstimate",
    "estimate_cost",
    "summarize_estimate",
]
