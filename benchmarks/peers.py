"""Peers: the clients compared, by name.

A peer is a class with a name, settings (recorded with every result and
overridable with ``--set PEER.KEY=VALUE``) and a ``run`` method that executes
in a fresh subprocess (``benchmarks.child``), one per run, so each peer's CPU
time and peak RSS are its own.  ``run`` builds its clients first, then wraps
exactly the transfer in ``with phase:``; imports and client creation count
towards the whole-process figures only.

Adding a peer: subclass :class:`Peer`, set ``name``, ``summary`` and
``defaults``, implement ``run`` (and ``not_applicable`` when it cannot run
against some target or workload, with the reason), and decorate it with
``@register``.  Heavy imports go inside ``run`` so the orchestrator never pays
for them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from benchmarks.workloads import Direction, MiB

if TYPE_CHECKING:
    from benchmarks.measure import Phase


@dataclass(frozen=True, slots=True)
class Target:
    """Where the peers send their requests.  Credentials None: the AWS chain."""

    endpoint_url: str | None
    bucket: str
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    botocore_checksums: str = "when_required"
    """``request_checksum_calculation`` / ``response_checksum_validation`` for
    botocore-based peers: rclone serve s3 needs ``when_required``."""
    kind: str = "embedded-rclone"
    """``embedded-rclone`` (started by the benchmark), ``custom`` or ``aws``."""

    def public(self) -> dict[str, Any]:
        """Without secrets, for the results file."""
        d = asdict(self)
        d.pop("secret_key")
        d.pop("session_token")
        d["access_key"] = "(given)" if self.access_key else None
        return d


@dataclass(frozen=True, slots=True)
class Item:
    local: str
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Job:
    """One run of one peer: what the child process receives (as JSON)."""

    peer: str
    settings: dict[str, Any]
    target: Target
    direction: Direction
    items: list[Item]
    result_path: str
    sample_interval: float = 0.05
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        d["target"] = Target(**d["target"])
        d["items"] = [Item(**i) for i in d["items"]]
        return cls(**d)


class Peer(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, overrides: dict[str, Any] | None = None, label: str | None = None) -> None:
        self.label = label or self.name
        """``name``, or ``name@variant`` for a second configuration of the same peer."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise KeyError(
                f"peer {self.name}: unknown setting(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        self.settings: dict[str, Any] = {**self.defaults, **overrides}

    def not_applicable(self, target: Target, direction: Direction) -> str | None:
        """A reason this peer cannot run here, or None."""
        return None

    def memory_budget(self) -> int | None:
        """Bytes the peer promises to stay within (for the RSS check), if any."""
        return None

    @abstractmethod
    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        """Runs in the child: set up, transfer inside ``with phase:``, return extra facts."""


PEERS: dict[str, type[Peer]] = {}


def register(cls: type[Peer]) -> type[Peer]:
    PEERS[cls.name] = cls
    return cls


def make_peer(spec: str, overrides: dict[str, Any] | None = None) -> Peer:
    """``name`` or ``name@variant`` (the same peer again, configured apart with --set)."""
    name = spec.split("@", 1)[0]
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}; choose from: {', '.join(PEERS)}")
    return PEERS[name](overrides, label=spec)


DEFAULT_PEERS = ("fastxfer", "boto3-default")


# -- fastxfer ------------------------------------------------------------------


@register
class FastxferPeer(Peer):
    name = "fastxfer"
    summary = "fastxfer TransferManager (aiobotocore) under uvloop, all files in one manager"
    defaults: ClassVar[dict[str, Any]] = {
        "max_concurrency": 16,
        "part_size": 16 * MiB,
        "multipart_threshold": 16 * MiB,
        "memory_limit": 512 * MiB,
        "io_chunk_size": 1 * MiB,
        "checksum": "auto",
        "fsync": True,
        "uvloop": True,
        # What the `fastxfer` command does at start (fastxfer/runtime.py).
        "tune_process": True,
    }

    def memory_budget(self) -> int | None:
        return int(self.settings["memory_limit"])

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import asyncio
        from collections import Counter

        from fastxfer import TransferConfig, TransferManager

        s = self.settings
        t = job.target
        cfg = TransferConfig(
            endpoint_url=t.endpoint_url,
            region=t.region,
            profile=t.profile,
            aws_access_key_id=t.access_key,
            aws_secret_access_key=t.secret_key,
            aws_session_token=t.session_token,
            max_concurrency=int(s["max_concurrency"]),
            part_size=int(s["part_size"]),
            multipart_threshold=int(s["multipart_threshold"]),
            memory_limit=int(s["memory_limit"]),
            io_chunk_size=int(s["io_chunk_size"]),
            checksum=s["checksum"],
            fsync=bool(s["fsync"]),
        )

        if s["tune_process"]:
            from fastxfer.runtime import tune_process

            tune_process()

        async def main() -> dict[str, Any]:
            async with TransferManager(cfg) as tm:
                with phase:
                    if job.direction == "upload":
                        handles = [tm.upload(i.local, t.bucket, i.key) for i in job.items]
                    else:
                        # The size is known from the listing, as in `fastxfer cp -r`.
                        handles = [
                            tm.download(t.bucket, i.key, i.local, size_hint=i.size)
                            for i in job.items
                        ]
                    results = await asyncio.gather(*handles)
                ms = tm.stats()
            return {
                "effective_checksum": cfg.effective_checksum,
                "verified": dict(Counter(str(r.verified) for r in results)),
                "retries": sum(r.retries for r in results),
                "parts": sum(r.parts_total for r in results),
                "memory_budget_peak": ms.memory_peak,
                "connections_peak": ms.connections_peak,
            }

        if s["uvloop"]:
            import uvloop

            return uvloop.run(main())
        return asyncio.run(main())


# -- boto3 ---------------------------------------------------------------------


def boto3_client(target: Target, **config: Any) -> Any:
    """A boto3 S3 client for the target; ``config`` adds botocore Config options."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=target.profile)
    s3: dict[str, Any] = dict(config.pop("s3", {}) or {})
    if target.endpoint_url:
        s3.setdefault("addressing_style", "path")
    cfg = Config(
        s3=s3 or None,
        request_checksum_calculation=target.botocore_checksums,
        response_checksum_validation=target.botocore_checksums,
        **config,
    )
    return session.client(
        "s3",
        endpoint_url=target.endpoint_url,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        aws_session_token=target.session_token,
        config=cfg,
    )


_S3TRANSFER_FIELDS = (
    "multipart_threshold",
    "multipart_chunksize",
    "max_request_concurrency",
    "max_submission_concurrency",
    "max_io_queue_size",
    "io_chunksize",
    "num_download_attempts",
    "use_threads",
    "max_bandwidth",
    "preferred_transfer_client",
)


class _Boto3Base(Peer):
    """upload_file / download_file, one call per file, files spread over a thread pool."""

    def client_config(self) -> dict[str, Any]:
        return {}

    def transfer_config(self) -> dict[str, Any]:
        return {}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        client = boto3_client(job.target, **self.client_config())
        tc = TransferConfig(**self.transfer_config())
        # Which transfer manager boto3 picks here (classic s3transfer, or CRT
        # on "optimized" instances): built once only to record its class.
        probe = create_transfer_manager(client, tc)
        manager_class = type(probe).__name__
        probe.shutdown()
        bucket = job.target.bucket

        def one(item: Any) -> None:
            if job.direction == "upload":
                client.upload_file(item.local, bucket, item.key, Config=tc)
            else:
                client.download_file(bucket, item.key, item.local, Config=tc)

        threads = int(self.settings.get("file_threads", 10))
        with phase:
            if len(job.items) == 1:
                one(job.items[0])
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(one, job.items))
        return {
            "transfer_manager": manager_class,
            "transfer_config": {k: getattr(tc, k, None) for k in _S3TRANSFER_FIELDS},
        }


@register
class Boto3DefaultPeer(_Boto3Base):
    name = "boto3-default"
    summary = (
        "boto3 client.upload_file/download_file with the default TransferConfig "
        "(8 MiB parts, 10 threads); many files: a 10-thread pool, one call per file"
    )
    defaults: ClassVar[dict[str, Any]] = {"file_threads": 10}


@register
class Boto3TunedPeer(_Boto3Base):
    name = "boto3-tuned"
    summary = (
        "boto3 upload_file/download_file with parts, threads and pool sized like "
        "fastxfer's, and no SHA-256 of the body over HTTP"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "file_threads": 10,
        "max_concurrency": 16,
        "part_size": 16 * MiB,
        "multipart_threshold": 16 * MiB,
        "max_pool_connections": 32,
        "payload_signing_enabled": False,
    }

    def client_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_pool_connections": int(s["max_pool_connections"]),
            "s3": {"payload_signing_enabled": bool(s["payload_signing_enabled"])},
        }

    def transfer_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_concurrency": int(s["max_concurrency"]),
            "multipart_chunksize": int(s["part_size"]),
            "multipart_threshold": int(s["multipart_threshold"]),
        }
