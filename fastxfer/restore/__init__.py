"""Batch restores from GLACIER and DEEP_ARCHIVE: request, wait cheaply, download as they thaw.

A :class:`RestoreJob` takes a list of keys or a prefix in one bucket and

1. classifies every object (:func:`classify`): STANDARD, GLACIER_IR and the
   other online classes are read directly, GLACIER / DEEP_ARCHIVE objects need
   a restore unless a restored copy still exists;
2. sends one RestoreObject per object that needs it, concurrently through the
   session's connection budget and under a requests-per-second cap
   (409 RestoreAlreadyInProgress counts as requested);
3. polls: one ListObjectsV2 with ``OptionalObjectAttributes=RestoreStatus``
   reports up to 1,000 objects, with a HEAD per object as the fallback for
   servers that do not answer it; the interval follows the tier's expected
   time (:func:`default_poll_interval`) and sleeps on the session's clock;
4. with ``download_dir``, :meth:`RestoreJob.run` starts each object's download
   as soon as a poll sees it thawed (ready objects go in the order requested),
   and re-issues RestoreObject for copies that would expire before they are
   downloaded; inside ``async with job``, :meth:`RestoreJob.wait_readable`
   returns as soon as one named object can be read (the duplicity backend).

The job lives in the project's sqlite state file (:mod:`fastxfer.state`,
:class:`RestoreStore`) so a process can die and come back hours later: nothing
already requested is requested again and files already downloaded with the
right size are kept.

Modules: :mod:`~fastxfer.restore.model` (tiers, states, expected times),
:mod:`~fastxfer.restore.prices` (price table, the pure cost estimate),
:mod:`~fastxfer.restore.options`, :mod:`~fastxfer.restore.store` (persistence),
:mod:`~fastxfer.restore.poll` (which objects thawed), :mod:`~fastxfer.restore.report`,
:mod:`~fastxfer.restore.job`.

Example::

    async with TransferManager(config) as tm:
        job = tm.restore_job(RestoreOptions(bucket="b", prefix="2024/", tier=RestoreTier.BULK))
        print((await job.estimate()).total_price)
        report = await job.run()

        async with tm.restore_job(RestoreOptions(bucket="b", keys=("v1", "v2"))) as job:
            await job.wait_readable("v1")        # v2 goes on thawing meanwhile
            await tm.download("b", "v1", "v1")
"""

from fastxfer.restore.job import RestoreJob, StartDownload
from fastxfer.restore.model import (
    DAY,
    EXPECTED_RESTORE_SECONDS,
    GB,
    LIST_PAGE_SIZE,
    ObjectRecord,
    ObjectState,
    RestoreTier,
    check_tier,
    classify,
    default_poll_interval,
    expected_restore_seconds,
    parse_duration,
)
from fastxfer.restore.options import RestoreOptions, default_state_path
from fastxfer.restore.poll import RestorePoller
from fastxfer.restore.prices import (
    CostEstimate,
    PriceTable,
    RequestCounts,
    TierEstimate,
    estimate_cost,
    summarize_estimate,
)
from fastxfer.restore.report import ObjectStatus, RestoreReport, summarize_report
from fastxfer.restore.store import RestoreStore, job_id
from fastxfer.storage_class import parse_restore_header

__all__ = [
    "DAY",
    "EXPECTED_RESTORE_SECONDS",
    "GB",
    "LIST_PAGE_SIZE",
    "CostEstimate",
    "ObjectRecord",
    "ObjectState",
    "ObjectStatus",
    "PriceTable",
    "RequestCounts",
    "RestoreJob",
    "RestoreOptions",
    "RestorePoller",
    "RestoreReport",
    "RestoreStore",
    "RestoreTier",
    "StartDownload",
    "TierEstimate",
    "check_tier",
    "classify",
    "default_poll_interval",
    "default_state_path",
    "estimate_cost",
    "expected_restore_seconds",
    "job_id",
    "parse_duration",
    "parse_restore_header",
    "summarize_estimate",
    "summarize_report",
]
