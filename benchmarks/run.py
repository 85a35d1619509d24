"""Run the benchmarks: ``python -m benchmarks.run [options]`` from the repository root.

By default an embedded ``rclone serve s3 --ignore-checksum`` is started on
tmpfs, incompressible source files are written once to tmpfs, and every
selected peer runs every selected workload ``--runs`` times, interleaved
and rotated (round 1: A B C, round 2: B C A, ...), each run in a fresh subprocess.  Every run
is verified (sizes on the server, bytes of the stored or downloaded files),
then its objects or files are deleted.  Objects that download workloads read
are warmed (one untimed HEAD each, twice) as soon as they are created, so no
peer pays the server's first-read MD5.  Peers run as shipped and, on the
single-object workloads, again with their connection knob at
``--common-concurrency``; fastxfer also runs a ``--concurrency`` sweep.  Results go to
``benchmarks/results/<timestamp>-<name>.json`` and ``.md`` (and ``latest.md``
for full-size runs).  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastxfer.units import format_size, parse_rate, parse_size

from benchmarks import charts, report
from benchmarks.measure import cpu_seconds
from benchmarks.peers import (
    DEFAULT_PEERS,
    PEERS,
    Item,
    Job,
    Peer,
    Target,
    boto3_client,
    make_peer,
)
from benchmarks.shaper import ShaperProcess
from benchmarks.sysinfo import REPO, machine_info
from benchmarks.workloads import (
    DEFAULT_WORKLOADS,
    GROUPS,
    LATENCY_SWEEP_ONLY,
    LATENCY_WORKLOADS,
    WORKLOADS,
    ScaledWorkload,
    select,
)

RESULTS_DIR = (
    REPO / "benchmarks" / "results"
    if (REPO / "pyproject.toml").exists()
    else Path("fastxfer-bench-results")  # installed package (`fastxfer bench`): here
)
COMPARE_CHUNK = 16 * 2**20


# -- command line -------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A ``--set`` value: true/false, JSON (numbers, strings, ...), a size, else the text.

    Sizes are :func:`fastxfer.units.parse_size`'s, as on fastxfer's command
    line: ``8MiB`` = 8 x 2**20, ``8MB`` or ``8M`` = 8 x 10**6.
    """
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return parse_size(text)
    except ValueError:  # fastxfer's InvalidConfig is a ValueError
        return text


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        lhs, sep, value = item.partition("=")
        peer, dot, key = lhs.partition(".")
        if not sep or not dot or not peer or not key:
            raise ValueError(f"--set wants PEER.KEY=VALUE, got {item!r}")
        out.setdefault(peer, {})[key] = parse_value(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark fastxfer against other S3 clients (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated, or 'all'; known: {', '.join(WORKLOADS)}; groups: "
        + "; ".join(f"{g} = {','.join(ws)}" for g, ws in GROUPS.items()),
    )
    p.add_argument(
        "--peers",
        default=",".join(DEFAULT_PEERS),
        help=f"comma-separated, in run order; known: {', '.join(PEERS)}; NAME@VARIANT runs "
        "a peer again with other settings (--set NAME@VARIANT.KEY=VALUE)",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per peer and workload")
    p.add_argument(
        "--suite",
        choices=("loopback", "latency", "all"),
        default="all",
        help="loopback: the workloads straight to the server; latency: the high-latency "
        "profile through the shaping proxy, each peer at every --connections; all: both",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test (~3 min): --scale 0.1 --runs 1, peers fastxfer,boto3-default, "
        "connections 1,16; results kept out of latest.md",
    )
    p.add_argument(
        "--common-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="loopback suite: also run every peer that has a connection knob with that knob "
        "at N (label PEER@cN, other settings as shipped) on the single-object workloads "
        "(upload-1g, download-1g, download-2g); 0: off",
    )
    p.add_argument(
        "--sweep",
        default="4,8,16,32,64",
        help="fastxfer's --concurrency sweep: fixed values run beside its default on "
        "--sweep-workloads (loopback labels fastxfer@cN, latency fastxfer@fixedN); "
        "'none': off",
    )
    p.add_argument(
        "--sweep-workloads",
        default="download-1g,lat-sweep-upload,lat-sweep-download",
        help="workloads of either suite the sweep runs on (when selected)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply sizes (single-file workloads) or file counts (many-file ones)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PEER.KEY=VALUE",
        help="override a peer setting, e.g. fastxfer.max_concurrency=32 or fastxfer.part_size=8MiB "
        "(sizes as fastxfer's: 8MiB = 8 x 2**20, 8MB = 8M = 8 x 10**6)",
    )
    p.add_argument("--baseline", default="boto3-default", help="peer the ratios are relative to")
    p.add_argument("--name", default=None, help="result file name suffix (default: workloads)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument(
        "--no-latest",
        action="store_true",
        help="do not copy the report to latest.md (for experiments next to the reference run)",
    )
    p.add_argument(
        "--workdir",
        default=None,
        help="scratch directory for sources, downloads and the embedded server "
        "(default: a new folder in /dev/shm, removed at the end)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="do not remove the scratch folder")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for one run")
    p.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be idle "
        "(other processes below --idle-cores for 2 s); for shared machines",
    )
    p.add_argument(
        "--idle-cores",
        type=float,
        default=0.15,
        help="CPU (in cores) that other processes may use for the machine to count as idle",
    )
    p.add_argument(
        "--sample-interval",
        type=float,
        default=0.05,
        help="seconds between RSS samples in the peer's process (0: off)",
    )
    p.add_argument(
        "--fail-on-check",
        action="store_true",
        help="exit 2 when a target check fails (runs that fail or do not verify always exit 1)",
    )
    p.add_argument("--list", action="store_true", help="list workloads and peers, then exit")
    p.add_argument(
        "--render",
        metavar="RESULT.json[,RESULT.json]",
        default=None,
        help="only rewrite the Markdown reports and charts of existing result files, then "
        "exit; with --latest also publish them as latest.md (e.g. a loopback and a latency "
        "result of separate invocations)",
    )
    p.add_argument("--latest", action="store_true", help="with --render: publish latest.md")
    lg = p.add_argument_group("high-latency profile (--suite latency or all)")
    lg.add_argument(
        "--latency-workloads",
        default="all",
        help=f"comma-separated, or 'all'; known: {', '.join(LATENCY_WORKLOADS)}",
    )
    lg.add_argument(
        "--latency-peers",
        default=None,
        help="peers for the latency profile (default: the --peers selection without "
        "boto3-tuned, which under the connection knob only differs from boto3-default by "
        "its SHA-256 setting, and fastxfer-cli, fastxfer's engine again)",
    )
    lg.add_argument(
        "--as-shipped",
        default="all",
        help="latency peers also run once with their own default concurrency and part "
        "size (comma-separated, 'all' or 'none')",
    )
    lg.add_argument(
        "--delay-ms", type=float, default=40.0, help="round-trip delay the proxy adds, ms"
    )
    lg.add_argument(
        "--rate",
        default="8MB",
        help="cap per TCP connection and direction, bytes/s (decimal: 8MB = 8e6)",
    )
    lg.add_argument(
        "--connections",
        default="1,4,16,64",
        help="connection counts each peer runs at (its knob is set per peer, with "
        "--latency-part-size parts; see --list); 'none': only as shipped (and the sweep)",
    )
    lg.add_argument(
        "--latency-size",
        default="160MiB",
        help="size of the one object up and down (1 connection at 8 MB/s: ~21 s); "
        "MiB = 2**20 bytes, MB = 10**6",
    )
    lg.add_argument(
        "--latency-sweep-size",
        default="512MiB",
        help="size of the object of lat-sweep-upload/-download, where fastxfer's "
        "--concurrency sweep runs (512 MiB: 32 parts of fastxfer's 16 MiB, so up to 32 "
        "connections can pay; 4 connections at 8 MB/s: ~17 s)",
    )
    lg.add_argument(
        "--latency-part-size",
        default="5MiB",
        help="part size every peer uses in the latency profile (S3's minimum; 160 MiB "
        "is 32 parts, so 64 connections can use only 32)",
    )
    g = p.add_argument_group("target (default: embedded rclone serve s3 on tmpfs)")
    g.add_argument("--endpoint-url", default=None, help="an S3 endpoint (MinIO, ...) instead")
    g.add_argument("--aws", action="store_true", help="use AWS S3 (needs --bucket)")
    g.add_argument("--bucket", default=None, help="an existing bucket (with --endpoint-url/--aws)")
    g.add_argument("--prefix", default=None, help="key prefix for everything written")
    g.add_argument(
        "--region", default=None, help="default: AWS_REGION / AWS_DEFAULT_REGION / us-east-1"
    )
    g.add_argument("--profile", default=None, help="AWS profile (default: the standard chain)")
    g.add_argument(
        "--access-key", default=None, help="default: AWS_ACCESS_KEY_ID or the standard chain"
    )
    g.add_argument(
        "--secret-key", default=None, help="default: AWS_SECRET_ACCESS_KEY or the standard chain"
    )
    g.add_argument(
        "--botocore-checksums",
        choices=("when_required", "when_supported"),
        default=None,
        help="botocore request/response checksum mode for botocore-based peers "
        "(default: when_required for custom endpoints, which rclone needs; "
        "when_supported, botocore's default, for AWS)",
    )
    g.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="pid of a local server to measure CPU of (automatic for the embedded server)",
    )
    g.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for the embedded rclone serve s3 (repeatable)",
    )
    return p


# -- helpers ------------------------------------------------------------------------------


def default_workdir() -> Path:
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(os.environ.get("TMPDIR", "/tmp"))
    return base / f"fastxfer-bench-{os.getpid()}-{secrets.token_hex(3)}"


def log(msg: str) -> None:
    print(msg, flush=True)


def write_random_file(path: Path, size: int) -> None:
    chunk = 64 * 2**20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def files_equal(a: str | Path, b: str | Path) -> bool:
    """Byte-for-byte comparison (memcmp of 16 MiB chunks)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            x = fa.read(COMPARE_CHUNK)
            y = fb.read(COMPARE_CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _psutil() -> Any:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    return psutil


def server_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    psutil = _psutil()
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system + t.children_user + t.children_system)


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far."""
    t = _psutil().cpu_times()
    total = sum(t)
    idle = t.idle + getattr(t, "iowait", 0.0)
    steal = getattr(t, "steal", 0.0)
    return total - idle - steal, steal


def wait_idle(limit_s: float, cores: float, server_pid: int | None) -> float:
    """Wait until the machine is idle (but for the server) for 2 s; return seconds waited."""
    t0 = time.perf_counter()
    while True:
        busy0, _ = machine_cpu()
        srv0 = server_cpu(server_pid) or 0.0
        time.sleep(2.0)
        busy1, _ = machine_cpu()
        srv1 = server_cpu(server_pid) or 0.0
        used = (busy1 - busy0 - (srv1 - srv0)) / 2.0
        waited = time.perf_counter() - t0
        if used <= cores or waited >= limit_s:
            return waited


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass
class Dataset:
    name: str
    dir: Path
    count: int
    size: int
    files: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.count * self.size


# -- the bench ----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    workloads: list[ScaledWorkload]
    peers: list[Peer]
    workdir: Path
    target: Target
    prefix: str
    server_pid: int | None = None
    server_root: Path | None = None
    server_args: str | None = None
    peer_target: Target | None = None
    """What the peers talk to: ``target``, or the shaping proxy in front of it."""
    proxy_pid: int | None = None
    suite: str = "loopback"
    datasets: dict[str, Dataset] = field(default_factory=dict)
    fixture_keys: dict[str, list[str]] = field(default_factory=dict)
    client: Any = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    not_applicable: dict[tuple[str, str], str] = field(default_factory=dict)
    only: dict[str, set[str]] = field(default_factory=dict)
    """Peer labels that run on some workloads only (see :class:`Plan`)."""
    warmed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per data set: what warming its objects cost the server (two HEAD passes)."""

    # -- set-up ---------------------------------------------------------------------

    def make_datasets(self) -> None:
        src = self.workdir / "src"
        for w in self.workloads:
            if w.dataset in self.datasets:
                continue
            d = Dataset(w.dataset, src / w.dataset, w.count, w.size)
            d.dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            for i in range(w.count):
                path = d.dir / f"f{i:05d}"
                write_random_file(path, w.size)
                d.files.append(path)
            log(
                f"data set {d.name}: {d.count} file(s), {d.total / 1e6:.1f} MB of os.urandom "
                f"in {time.perf_counter() - t0:.1f} s"
            )
            self.datasets[d.name] = d

    def upload_fixtures(self) -> None:
        """Objects for download workloads, uploaded once (outside every measurement).

        They carry the whole-object CRC64NVME in the user metadata fastxfer
        writes in ``client`` checksum mode, so fastxfer downloads verify it as
        they would for objects fastxfer uploaded.
        """
        from boto3.s3.transfer import TransferConfig

        from fastxfer.integrity import METADATA_KEY, file_crc64nvme, to_b64

        tc = TransferConfig(max_concurrency=8, multipart_chunksize=16 * 2**20)
        for w in self.workloads:
            if w.direction != "download" or w.dataset in self.fixture_keys:
                continue
            d = self.datasets[w.dataset]
            keys = [f"{self.prefix}/fixtures/{d.name}/{p.name}" for p in d.files]

            def put(pair: tuple[Path, str]) -> None:
                path, key = pair
                crc, _ = file_crc64nvme(path)
                self.client.upload_file(
                    str(path),
                    self.target.bucket,
                    key,
                    ExtraArgs={"Metadata": {METADATA_KEY: to_b64(crc)}},
                    Config=tc,
                )

            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(put, zip(d.files, keys, strict=True)))
            log(f"fixtures {d.name}: uploaded in {time.perf_counter() - t0:.1f} s")
            # Warm first (its first pass shows what rclone's MD5s cost), then check by
            # LIST that nothing is missing or extra.
            self.warm(d.name, keys, d.size, d.total)
            sizes = self.list_sizes(f"{self.prefix}/fixtures/{d.name}/")
            bad = [k for k in keys if sizes.get(k) != d.size]
            if bad or len(sizes) != len(keys):
                raise RuntimeError(f"fixture upload of {d.name} failed for {len(bad)} object(s)")
            self.fixture_keys[d.name] = keys

    def head_all(self, keys: list[str]) -> tuple[float, float | None, dict[str, int]]:
        """HEAD every key (8 at once): (wall s, server CPU s or None, sizes)."""

        def head(key: str) -> tuple[str, int]:
            r = self.client.head_object(Bucket=self.target.bucket, Key=key)
            return key, int(r["ContentLength"])

        srv0 = server_cpu(self.server_pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            sizes = dict(pool.map(head, keys))
        wall = time.perf_counter() - t0
        srv1 = server_cpu(self.server_pid)
        return wall, (srv1 - srv0 if srv0 is not None and srv1 is not None else None), sizes

    def warm(self, name: str, keys: list[str], size: int, total_bytes: int) -> None:
        """HEAD every object, untimed, right after it is created (twice).

        rclone serve s3 computes an object's MD5 ETag on its first HEAD, GET or
        LIST (2.1 server CPU-s for a fresh 1 GiB object on the reference
        machine) and keeps it while its directory cache holds the object
        (``--dir-cache-time``, 5 min by default), so without this whichever
        peer reads an object first pays for it.  The first pass is that cost;
        the second checks that it stuck (~0).  :meth:`run_one` HEADs a
        download's objects again before every run, outside the measurement, in
        case the cache expired.  Straight to the server, never through the
        shaping proxy.
        """
        passes: list[dict[str, float | None]] = []
        for _ in range(2):
            wall, cpu, sizes = self.head_all(keys)
            wrong = [k for k in keys if sizes.get(k) != size]
            if wrong:
                got = sizes.get(wrong[0])
                raise RuntimeError(f"fixture {wrong[0]} has {got} bytes, not {size}")
            passes.append({"wall_s": wall, "server_cpu_s": cpu})
        self.warmed[name] = {"objects": len(keys), "bytes": total_bytes, "passes": passes}
        c1, c2 = passes[0]["server_cpu_s"], passes[1]["server_cpu_s"]
        log(
            f"warmed {name}: {len(keys)} HEAD(s) in {passes[0]['wall_s']:.2f} s"
            + (f", server {c1:.2f} CPU-s; second pass {c2:.2f}" if None not in (c1, c2) else "")
        )

    # -- S3 helpers -------------------------------------------------------------------

    def list_sizes(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.target.bucket, Prefix=prefix
        ):
            for o in page.get("Contents", []):
                out[o["Key"]] = int(o["Size"])
        return out

    def delete_keys(self, keys: list[str]) -> None:
        bucket = self.target.bucket
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            try:
                r = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
                ok = not r.get("Errors")
            except Exception:
                ok = False
            if not ok:
                # Servers without DeleteObjects: one DELETE per key.
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda k: self.client.delete_object(Bucket=bucket, Key=k), batch))

    def abort_uploads(self, prefix: str) -> int:
        try:
            r = self.client.list_multipart_uploads(Bucket=self.target.bucket, Prefix=prefix)
        except Exception:
            return 0
        ups = r.get("Uploads", [])
        for u in ups:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.target.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )
        return len(ups)

    # -- one run ----------------------------------------------------------------------

    def import_root(self, peer: Peer) -> str:
        """Where the child finds ``benchmarks``: the repository, or for a peer
        in another venv (aioboto3) a folder holding only a link to the package,
        so that venv's own botocore is not shadowed by this one's site-packages."""
        if peer.interpreter() == sys.executable:
            return str(REPO)
        root = self.workdir / "pkg"
        link = root / "benchmarks"
        if not link.exists():
            root.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(__file__).resolve().parent, target_is_directory=True)
        return str(root)

    def run_one(self, rnd: int, w: ScaledWorkload, peer: Peer) -> dict[str, Any]:
        d = self.datasets[w.dataset]
        tag = f"r{rnd}-{w.name}-{peer.label}"
        dst = self.workdir / "dst" / tag
        run_prefix = f"{self.prefix}/runs/{w.name}/{peer.label}/r{rnd}/"
        if w.direction == "upload":
            items = [Item(str(p), run_prefix + p.name, d.size) for p in d.files]
        else:
            dst.mkdir(parents=True, exist_ok=True)
            keys = self.fixture_keys[d.name]
            items = [Item(str(dst / p.name), k, d.size) for p, k in zip(d.files, keys, strict=True)]
        result_path = self.workdir / "logs" / f"{tag}.json"
        log_path = self.workdir / "logs" / f"{tag}.log"
        result_path.unlink(missing_ok=True)  # never read a stale result (reused --workdir)
        job = Job(
            peer=peer.label,
            settings=peer.settings,
            target=self.peer_target or self.target,
            direction=w.direction,
            items=items,
            result_path=str(result_path),
            sample_interval=self.args.sample_interval,
        )
        rec: dict[str, Any] = {
            "round": rnd,
            "workload": w.name,
            "peer": peer.label,
            "files": w.count,
            "bytes": w.total_bytes,
            "ok": False,
            "suite": self.suite,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [self.import_root(peer), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        if w.direction == "download":
            # Warm again, untimed, before the server's CPU is sampled: ~0 while
            # rclone still caches the MD5s, the whole cost if its cache expired.
            try:
                wall, cpu, _ = self.head_all([i.key for i in items])
                rec["rewarm_s"] = wall
                rec["rewarm_server_cpu_s"] = cpu
            except Exception as exc:  # the run itself will say what is wrong
                rec["rewarm_error"] = f"{type(exc).__name__}: {exc}"
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        srv0 = server_cpu(self.server_pid)
        proxy0 = server_cpu(self.proxy_pid)
        busy0, steal0 = machine_cpu()
        t0 = time.perf_counter()
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(
                [peer.interpreter(), "-m", "benchmarks.child"],
                stdin=subprocess.PIPE,
                stdout=logf,
                stderr=logf,
                cwd=str(REPO),
                env=env,
            )
            try:
                proc.communicate(job.to_json().encode(), timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rec["error"] = f"timed out after {self.args.timeout:.0f} s"
        t1 = time.perf_counter()
        busy1, steal1 = machine_cpu()
        srv1 = server_cpu(self.server_pid)
        proxy1 = server_cpu(self.proxy_pid)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = cpu_seconds(ru1) - cpu_seconds(ru0)
        parent_cpu = cpu_seconds(self1) - cpu_seconds(self0)
        rec["child_wall_s"] = t1 - t0
        rec["exit_code"] = proc.returncode
        rec["cpu_process_s"] = client_cpu
        rec["server_cpu_s"] = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        rec["proxy_cpu_s"] = proxy1 - proxy0 if proxy0 is not None and proxy1 is not None else None
        other = (
            busy1
            - busy0
            - client_cpu
            - parent_cpu
            - (rec["server_cpu_s"] or 0.0)
            - (rec["proxy_cpu_s"] or 0.0)
        )
        rec["other_cpu_s"] = max(0.0, other)
        rec["steal_s"] = steal1 - steal0

        child: dict[str, Any] = {}
        if result_path.exists():
            child = json.loads(result_path.read_text())
        rec["child"] = child
        if "error" not in rec and not child.get("ok"):
            rec["error"] = child.get("error") or f"child exited {proc.returncode} without a result"
        if child.get("traceback") or (rec.get("error") and log_path.exists()):
            tail = log_path.read_text(errors="replace")[-4000:]
            rec["log_tail"] = (child.get("traceback") or "") + tail
        ph = child.get("phase")
        if ph:
            rec["wall_s"] = ph["wall_s"]
            rec["cpu_transfer_s"] = ph["cpu_s"]
            rec["user_s"] = ph.get("user_s")
            rec["sys_s"] = ph.get("sys_s")
            rec["rss_start_mib"] = (ph.get("rss_start_kib") or 0) / 1024
            peaks = ph.get("status_peaks_kib") or {}
            rec["peak_rss_anon_mib"] = peaks["RssAnon"] / 1024 if "RssAnon" in peaks else None
            rec["peak_rss_file_mib"] = peaks["RssFile"] / 1024 if "RssFile" in peaks else None
            rec["peak_rss_shmem_mib"] = peaks["RssShmem"] / 1024 if "RssShmem" in peaks else None
        if child.get("process"):
            rec["peak_rss_mib"] = child["process"]["peak_rss_kib"] / 1024
        rec["extra"] = child.get("extra")
        rec["cpu_client_s"] = rec["cpu_process_s"]
        tool_hwm = (rec["extra"] or {}).get("tool_peak_rss_kib")
        if tool_hwm:
            # A tool peer: the tool's own peak, not the Python wrapper's.
            rec["wrapper_peak_rss_mib"] = rec.get("peak_rss_mib")
            rec["peak_rss_mib"] = tool_hwm / 1024
            rec["peak_rss_anon_mib"] = None
            if ph and ph.get("cpu_children_s") is not None:
                # The tool's processes from start to exit, without the Python wrapper.
                rec["cpu_client_s"] = ph["cpu_children_s"]

        # Verify (outside every measurement), then clean up.
        if "error" not in rec:
            try:
                rec["verify"] = self.verify(w, items, d)
                rec["ok"] = True
            except Exception as exc:
                rec["error"] = f"verification failed: {exc}"
        self.cleanup_run(w, items, run_prefix, dst)
        report.derive(rec)
        return rec

    def verify(self, w: ScaledWorkload, items: list[Item], d: Dataset) -> str:
        if w.direction == "upload":
            prefix = items[0].key.rsplit("/", 1)[0] + "/"
            sizes = self.list_sizes(prefix)
            missing = [i.key for i in items if i.key not in sizes]
            if missing:
                raise RuntimeError(f"{len(missing)} object(s) missing, e.g. {missing[0]}")
            wrong = [i.key for i in items if sizes[i.key] != i.size]
            if wrong:
                raise RuntimeError(f"{len(wrong)} object(s) of the wrong size, e.g. {wrong[0]}")
            if len(sizes) != len(items):
                raise RuntimeError(f"{len(sizes)} objects under {prefix}, expected {len(items)}")
            how = "list: sizes"
            if self.server_root is not None:
                for i in items:
                    stored = self.server_root / self.target.bucket / i.key
                    if not stored.exists():
                        return how + " (stored file not found for a byte check)"
                    if not files_equal(i.local, stored):
                        raise RuntimeError(f"stored bytes of {i.key} differ from {i.local}")
                how += " + stored bytes == source"
            return how
        for i, src in zip(items, d.files, strict=True):
            if not os.path.exists(i.local):
                raise RuntimeError(f"{i.local} was not written")
            if not files_equal(src, i.local):
                raise RuntimeError(f"downloaded bytes of {i.key} differ from {src}")
        return "downloaded bytes == source"

    def cleanup_run(self, w: ScaledWorkload, items: list[Item], run_prefix: str, dst: Path) -> None:
        if w.direction == "upload":
            try:
                keys = list(self.list_sizes(run_prefix))
                self.delete_keys(keys)
                self.abort_uploads(run_prefix)
            except Exception as exc:
                log(f"  warning: could not delete {run_prefix}: {exc}")
        shutil.rmtree(dst, ignore_errors=True)

    # -- the whole thing ----------------------------------------------------------------

    def run_all(self) -> None:
        applicable: dict[tuple[str, str], str | None] = {}
        for w in self.workloads:
            for p in self.peers:
                if p.label in self.only and w.name not in self.only[p.label]:
                    continue  # a row for other workloads (common concurrency, sweep)
                applicable[(w.name, p.label)] = p.not_applicable(self.target, w.direction, w.size)
        total = self.args.runs * sum(1 for v in applicable.values() if v is None)
        n = 0
        for rnd in range(1, self.args.runs + 1):
            # The order rotates every round (A B C, B C A, C A B), so whatever a
            # position costs (the server's state after the previous run's checks
            # and deletions: the same 1 GiB upload took 2.3 to 3.9 server CPU-s
            # from run to run) falls on every peer alike, not always on one.
            k = (rnd - 1) % max(1, len(self.peers))
            order = self.peers[k:] + self.peers[:k]
            for w in self.workloads:
                for p in order:
                    if applicable.get((w.name, p.label), "skip") is not None:
                        continue
                    n += 1
                    waited = None
                    if self.args.wait_idle > 0:
                        waited = wait_idle(
                            self.args.wait_idle, self.args.idle_cores, self.server_pid
                        )
                    rec = self.run_one(rnd, w, p)
                    rec["waited_for_idle_s"] = waited
                    self.runs.append(rec)
                    log(
                        f"[{n}/{total}] {self.suite} round {rnd} {w.name} {p.label}: "
                        f"{one_line(rec)}"
                    )
                    if self.args.pause > 0:
                        time.sleep(self.args.pause)
        self.not_applicable = {k: v for k, v in applicable.items() if v is not None}


def one_line(rec: dict[str, Any]) -> str:
    if not rec.get("ok"):
        return f"FAILED: {rec.get('error')}"
    if rec["bytes"] < 1024:
        # 1-byte (start-up) runs: per-GiB figures mean nothing.
        return (
            f"client process {rec['cpu_client_s']:.2f} CPU-s, {rec['child_wall_s']:.2f} s wall; "
            f"transfer {rec['wall_s']:.3f} s, rss {rec.get('peak_rss_mib', 0):.0f} MiB"
        )
    parts = [
        f"{rec['mb_s']:.0f} MB/s",
        f"{rec['wall_s']:.2f} s",
        f"cpu {rec['cpu_transfer_s_per_gib']:.2f}/{rec['cpu_process_s_per_gib']:.2f} s/GiB",
    ]
    if rec.get("server_cpu_s_per_gib") is not None:
        parts.append(f"server {rec['server_cpu_s_per_gib']:.2f} s/GiB")
    parts.append(f"rss {rec.get('peak_rss_mib', 0):.0f} MiB")
    if rec.get("proxy_cpu_s") is not None:
        parts.append(f"proxy {rec['proxy_cpu_s'] / rec['wall_s']:.2f} cores")
    if rec.get("other_cpu_s", 0) > 0.5:
        parts.append(f"noise {rec['other_cpu_s']:.1f} cpu-s")
    return ", ".join(parts)


# -- target -----------------------------------------------------------------------------


@contextlib.contextmanager
def open_target(
    args: argparse.Namespace, workdir: Path
) -> Iterator[tuple[Target, Any, Path | None]]:
    """Yield (target, server or None, server root or None)."""
    region = (
        args.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    if args.endpoint_url or args.aws:
        if not args.bucket:
            raise SystemExit("--bucket is required with --endpoint-url or --aws")
        checksums = args.botocore_checksums or ("when_supported" if args.aws else "when_required")
        yield (
            Target(
                endpoint_url=None if args.aws else args.endpoint_url,
                bucket=args.bucket,
                region=region,
                access_key=args.access_key,
                secret_key=args.secret_key,
                profile=args.profile,
                botocore_checksums=checksums,
                kind="aws" if args.aws else "custom",
            ),
            None,
            None,
        )
        return
    from fastxfer.localserver import LocalS3Server

    root = workdir / "server"
    srv = LocalS3Server(
        root=str(root),
        # --dir-cache-time: rclone keeps an object's MD5 (computed on its first
        # read) only while its directory cache holds the object (5 min by
        # default); the suite runs far longer, and every write goes through
        # this server, so a long cache loses nothing and keeps objects warm.
        extra_args=("--ignore-checksum", "--dir-cache-time", "1000h", *args.server_arg),
        log_path=str(workdir / "logs" / "server.log"),
    )
    with srv:
        bucket = srv.make_bucket()
        yield (
            Target(
                endpoint_url=srv.endpoint_url,
                bucket=bucket,
                region="us-east-1",
                access_key=srv.access_key,
                secret_key=srv.secret_key,
                botocore_checksums=args.botocore_checksums or "when_required",
                kind="embedded-rclone",
            ),
            srv,
            root,
        )


# -- main -------------------------------------------------------------------------------


def expand_names(text: str, known: list[str]) -> list[str]:
    """Comma-separated names; ``all`` expands to ``known`` (in order)."""
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            out.extend(k for k in known if k not in out)
        elif name in out:
            raise ValueError(f"{name} is named twice (use NAME@VARIANT for a second setting)")
        else:
            out.append(name)
    return out


@dataclass
class Plan:
    """One suite: its workloads and peers (latency: one peer per connection count)."""

    suite: str
    workloads: list[ScaledWorkload]
    peers: list[Peer]
    connections: list[int] = field(default_factory=list)
    only: dict[str, set[str]] = field(default_factory=dict)
    """Peer labels that run on some workloads only (label -> workload names)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra rows, by label: {"peer", "role" (common, sweep, scaling, as-shipped), "n"}."""
    sweep: dict[str, Any] | None = None
    """fastxfer's --concurrency sweep: {"peer", "default", "labels" {n: label},
    "workloads", "tolerance"}."""
    notes: list[str] = field(default_factory=list)


LATENCY_SKIPPED = ("boto3-tuned", "fastxfer-cli")
"""Peers the latency profile leaves out unless --latency-peers names them."""

SWEEP_TOLERANCE = {"loopback": 0.05, "latency": 0.10}
"""How far fastxfer's default may be below its best fixed --concurrency (issue #13)."""


def apply_quick(args: argparse.Namespace, argv: list[str]) -> None:
    given = " ".join(argv)
    if "--scale" not in given:
        args.scale = 0.1
    if "--runs" not in given:
        args.runs = 1
    if "--peers" not in given:
        args.peers = "fastxfer,boto3-default"
    if "--connections" not in given:
        args.connections = "1,16"
    if "--pause" not in given:
        args.pause = 0.2
    args.no_latest = True


def int_list(text: str, what: str) -> list[int]:
    """``4,8,16`` -> [4, 8, 16]; ``none`` or empty -> []."""
    if text.strip().lower() in ("", "none", "0"):
        return []
    try:
        out = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"{what} wants positive integers, e.g. 4,8,16, got {text!r}") from None
    if min(out, default=1) < 1:
        raise ValueError(f"{what} wants positive integers, e.g. 4,8,16, got {text!r}")
    return sorted(set(out), key=out.index)


def _add_row(
    plan: Plan,
    label: str,
    settings: dict[str, Any],
    workloads: list[str] | None,
    role: str,
    n: int | None,
) -> None:
    """Add a peer row (or widen an existing one to more workloads)."""
    existing = next((p for p in plan.peers if p.label == label), None)
    if existing is None:
        plan.peers.append(make_peer(label, settings))
        plan.variants[label] = {"peer": label.split("@", 1)[0], "role": role, "n": n}
        if workloads is not None:
            plan.only[label] = set(workloads)
        return
    if workloads is None:
        plan.only.pop(label, None)
    elif label in plan.only:
        plan.only[label].update(workloads)
    roles = plan.variants.setdefault(label, {"peer": label.split("@", 1)[0], "n": n})
    if role not in roles.get("role", ""):
        roles["role"] = "+".join(filter(None, [roles.get("role"), role]))


def make_plans(args: argparse.Namespace) -> list[Plan]:
    overrides = parse_overrides(args.set)
    peer_names = expand_names(args.peers, list(PEERS))
    # `all` means every installed peer: leave out, with a note, those not installed here.
    named = {n.strip() for n in args.peers.split(",")} | {
        n.strip() for n in (args.latency_peers or "").split(",")
    }
    missing: dict[str, str] = {}
    for name in list(PEERS) if "all" in named else []:
        if name not in named:
            why = make_peer(name).unavailable()
            if why:
                missing[name] = why
    peer_names = [n for n in peer_names if n not in missing]
    skipped = [f"{n} not run (not installed): {why}" for n, why in missing.items()]
    sweep = int_list(args.sweep, "--sweep")
    sweep_wl = {w.strip() for w in args.sweep_workloads.split(",") if w.strip()}
    unknown = sweep_wl - set(WORKLOADS) - set(LATENCY_WORKLOADS)
    if unknown:
        raise ValueError(f"--sweep-workloads: unknown workload(s) {', '.join(sorted(unknown))}")
    if args.common_concurrency < 0:
        raise ValueError("--common-concurrency wants N >= 0")
    plans: list[Plan] = []
    labels: set[str] = set(peer_names)
    subject = "fastxfer"
    if args.suite in ("loopback", "all"):
        workloads = [w.scaled(args.scale) for w in select(args.workloads)]
        peers = [make_peer(n, overrides.get(n)) for n in peer_names]
        plan = Plan("loopback", workloads, peers)
        single = [w.name for w in workloads if w.kind == "single"]
        n = args.common_concurrency
        if n and single:
            for base in list(peers):
                if "@" in base.label or not base.has_knob():
                    continue
                label = f"{base.name}@c{n}"
                merged = {
                    **overrides.get(base.name, {}),
                    **base.concurrency_settings(n),
                    **overrides.get(label, {}),
                }
                labels.add(label)
                if {**base.settings, **merged} == base.settings:
                    plan.notes.append(
                        f"no {label} row: {base.name} as shipped already runs {n} requests "
                        "per object"
                    )
                    continue
                _add_row(plan, label, merged, single, "common", n)
        swept = [w.name for w in workloads if w.name in sweep_wl]
        if sweep and swept and subject in peer_names:
            base = next(p for p in peers if p.label == subject)
            sweep_labels: dict[int, str] = {}
            for c in sweep:
                label = f"{subject}@c{c}"
                labels.add(label)
                merged = {
                    **overrides.get(subject, {}),
                    **base.concurrency_settings(c),
                    **overrides.get(label, {}),
                }
                _add_row(plan, label, merged, swept, "sweep", c)
                sweep_labels[c] = label
            plan.sweep = {
                "peer": subject,
                "default": subject,
                "labels": sweep_labels,
                "workloads": swept,
                "tolerance": SWEEP_TOLERANCE["loopback"],
            }
        plans.append(plan)
    if args.suite in ("latency", "all"):
        size = parse_size(args.latency_size, what="--latency-size")
        sweep_size = parse_size(args.latency_sweep_size, what="--latency-sweep-size")
        part = parse_size(args.latency_part_size, what="--latency-part-size")
        lat_workloads = [
            dataclasses.replace(
                w, size=sweep_size if w.name in LATENCY_SWEEP_ONLY else size
            ).scaled(args.scale)
            for w in select(args.latency_workloads, LATENCY_WORKLOADS)
        ]
        conns = int_list(args.connections, "--connections")
        lat_names = [
            n
            for n in expand_names(args.latency_peers or args.peers, list(PEERS))
            if n not in missing
        ]
        if not args.latency_peers and len(lat_names) > 1:
            lat_names = [n for n in lat_names if n not in LATENCY_SKIPPED]
        shipped = (
            set(lat_names)
            if args.as_shipped == "all"
            else {n.strip() for n in args.as_shipped.split(",") if n.strip() != "none"}
        )
        swept = [w.name for w in lat_workloads if w.name in sweep_wl]
        do_sweep = bool(sweep and swept and subject in lat_names)
        if not do_sweep:
            # Nothing runs on the sweep's own workloads without the sweep.
            lat_workloads = [w for w in lat_workloads if w.name not in LATENCY_SWEEP_ONLY]
            swept = []
        regular = [w.name for w in lat_workloads if w.name not in LATENCY_SWEEP_ONLY]
        lat = Plan("latency", lat_workloads, [], conns)
        for name in lat_names:
            base = make_peer(name, overrides.get(name))
            # As shipped (the peer's own concurrency and part size), then each count.
            label = f"{name}@default"
            as_shipped = {**overrides.get(name, {}), **overrides.get(label, {})}
            if name in shipped:
                labels.add(label)
                _add_row(lat, label, as_shipped, regular, "as-shipped", None)
            if name == subject and do_sweep:
                # The sweep compares against fastxfer as shipped: run it there too.
                labels.add(label)
                _add_row(lat, label, as_shipped, swept, "as-shipped", None)
            for n in conns:
                label = f"{name}@c{n}"
                labels.add(label)
                merged = {
                    **overrides.get(name, {}),
                    **base.connection_settings(n, part),
                    **overrides.get(label, {}),
                }
                _add_row(lat, label, merged, regular, "scaling", n)
            if name == subject and do_sweep:
                sweep_labels = {}
                for c in sweep:
                    # Only --concurrency changes: fastxfer's own part sizes.
                    label = f"{name}@fixed{c}"
                    labels.add(label)
                    merged = {
                        **overrides.get(name, {}),
                        **base.concurrency_settings(c),
                        **overrides.get(label, {}),
                    }
                    _add_row(lat, label, merged, swept, "sweep", c)
                    sweep_labels[c] = label
                lat.sweep = {
                    "peer": subject,
                    "default": f"{subject}@default",
                    "labels": sweep_labels,
                    "workloads": swept,
                    "only": [w for w in swept if w in LATENCY_SWEEP_ONLY],
                    "tolerance": SWEEP_TOLERANCE["latency"],
                }
        plans.append(lat)
    for plan in plans:
        plan.notes[:0] = skipped
    stray = sorted(set(overrides) - labels)
    if stray:
        raise ValueError(f"--set names peer(s) not selected: {', '.join(stray)}")
    if not plans or not any(p.peers for p in plans):
        raise ValueError("no peer selected")
    return plans


def list_all() -> None:
    print("workloads:")
    for w in [*WORKLOADS.values(), *LATENCY_WORKLOADS.values()]:
        print(f"  {w.name:18} {w.count} x {w.size} B {w.direction}: {w.summary}")
    print("peers:")
    for name, cls in PEERS.items():
        print(f"  {name:18} {cls.summary}")
        for k, v in cls.defaults.items():
            print(f"  {'':18}   {k} = {v!r}")
        try:
            common = cls().concurrency_settings(16)
            knob = cls().connection_settings(16, 8 * 2**20)
            print(f"  {'':18}   --common-concurrency 16 / sweep at 16: {common}")
            print(f"  {'':18}   latency profile, 16 connections, 8 MiB parts: {knob}")
        except NotImplementedError:
            pass
    print("workload groups:")
    for g, ws in GROUPS.items():
        print(f"  {g:18} {', '.join(ws)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.list:
        list_all()
        return 0
    published: list[Published] = []
    if args.render:
        for name in args.render.split(","):
            src = Path(name.strip())
            result = json.loads(src.read_text())
            recheck(result)
            md, pngs = write_report(result, src.parent, src.stem)
            published.append(Published(result["config"].get("suite", "loopback"), md, pngs, result))
            log(f"wrote {src.with_suffix('.md')}" + "".join(f", {p.name}" for p in pngs))
        if args.latest:
            publish_latest(Path(args.render.split(",")[0]).parent, published)
        return 0
    if args.quick:
        apply_quick(args, argv)
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    try:
        plans = make_plans(args)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if args.aws and any(p.suite == "latency" for p in plans):
        if args.suite == "latency":
            print("error: the latency profile needs an http:// endpoint", file=sys.stderr)
            return 2
        log("note: no latency profile against AWS (it already has WAN latency)")
        plans = [p for p in plans if p.suite != "latency"]

    workdir = Path(args.workdir) if args.workdir else default_workdir()
    created = not workdir.exists()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    all_w = [w for p in plans for w in p.workloads]
    datasets = {w.dataset: w.count * w.size for w in all_w}
    need = sum(datasets.values())
    need += sum(datasets[w.dataset] for w in all_w if w.direction == "download")  # fixtures
    need += max(w.total_bytes for w in all_w)  # one run's copy
    if free_bytes(workdir) < need * 1.1:
        print(
            f"error: {workdir} has {format_size(free_bytes(workdir))} free, "
            f"the benchmark needs about {format_size(need * 1.1)}",
            file=sys.stderr,
        )
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
        return 2

    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"workdir {workdir}; results in {out_dir}")
    machine_info_cached()
    code = 0
    try:
        with open_target(args, workdir) as (target, srv, root):
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            prefix = (args.prefix or f"fastxfer-bench/{stamp}-{secrets.token_hex(3)}").rstrip("/")
            log(f"target {target.kind} {target.endpoint_url or 'AWS'} bucket {target.bucket}")
            client = boto3_client(target)
            for plan in plans:
                bench, result = run_plan(plan, args, target, srv, root, workdir, prefix, client)
                name = args.name or (
                    args.workloads
                    if (args.workloads == "all" or args.workloads in GROUPS)
                    and plan.suite == "loopback"
                    else "_".join(w.name for w in plan.workloads)
                )
                name = f"{plan.suite}-{name}"
                if args.scale != 1:
                    name += f"-scale{args.scale:g}"
                stem = f"{result['started_at'].replace('-', '').replace(':', '')}-{name}"
                json_path = out_dir / f"{stem}.json"
                json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
                md, pngs = write_report(result, out_dir, stem)
                log("")
                log(md)
                log(f"wrote {json_path}, {stem}.md" + "".join(f", {p.name}" for p in pngs))
                published.append(Published(plan.suite, md, pngs, result))
                if any(not r["ok"] for r in bench.runs):
                    code = 1
                elif args.fail_on_check and any(c["passed"] is False for c in result["checks"]):
                    code = max(code, 2)
    finally:
        if created and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.scale == 1 and not args.no_latest and published:
        publish_latest(out_dir, published)
    else:
        why = "--no-latest/--quick" if args.no_latest else "scaled run"
        log(f"latest.md left alone ({why})")
    return code


def recheck(result: dict[str, Any]) -> None:
    """Recompute a stored result's target checks with today's targets (in memory)."""
    cfg = result["config"]
    suite = cfg.get("suite") or ("latency" if cfg.get("shaping") else "loopback")
    subject = "fastxfer"
    budget = next(
        (p.get("memory_budget") for p in result["peers"].values() if p.get("peer") == subject),
        None,
    )
    result["checks"] = [
        c.as_dict()
        for c in report.checks(
            result["summary"],
            subject=subject,
            baseline=cfg["baseline"],
            memory_budget=budget,
            suite=suite,
            sweep=cfg.get("sweep"),
        )
    ]


def write_report(result: dict[str, Any], out_dir: Path, stem: str) -> tuple[str, list[Path]]:
    """``<stem>.md`` and the charts ``<stem>-*.png``; returns (Markdown, charts)."""
    md = report.markdown(result)
    pngs = charts.render(result, out_dir, stem)
    if pngs:
        md += "\n## Charts\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    (out_dir / f"{stem}.md").write_text(md)
    return md, pngs


@dataclass
class Published:
    """One suite's report as written: what ``latest.md`` is made of."""

    suite: str
    markdown: str
    charts: list[Path]
    result: dict[str, Any]


def publish_latest(out_dir: Path, published: list[Published]) -> None:
    """latest.md and latest-<suite>-*.png.

    latest.md starts with the section README.md's "Latest results" copies (every
    suite's headline tables, who wins where, the sweep, start-up and marginal
    CPU, the target lines; charts as ``results/latest-*.png``), then every
    suite's full report, one after the other.
    """
    parts: list[str] = []
    readme_charts: list[str] = []
    for pub in published:
        text = pub.markdown
        for png in pub.charts:
            dst = f"latest-{pub.suite}-{png.stem.rsplit('-', 1)[-1]}.png"
            shutil.copyfile(png, out_dir / dst)
            text = text.replace(f"]({png.name})", f"]({dst})")
            readme_charts.append(dst)
        parts.append(text)
    head = report.readme_section([p.result for p in published], readme_charts)
    (out_dir / "latest.md").write_text("\n\n".join([head, *parts]))
    log(f"wrote {out_dir / 'latest.md'}")


def run_plan(
    plan: Plan,
    args: argparse.Namespace,
    target: Target,
    srv: Any,
    root: Path | None,
    workdir: Path,
    prefix: str,
    client: Any,
) -> tuple[Bench, dict[str, Any]]:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    bench = Bench(
        args=args,
        workloads=plan.workloads,
        peers=plan.peers,
        workdir=workdir,
        target=target,
        prefix=f"{prefix}/{plan.suite}",
        server_pid=srv.pid if srv is not None else args.server_pid,
        server_root=root,
        server_args=" ".join(("rclone serve s3", *srv.extra_args)) if srv else None,
        suite=plan.suite,
        only=plan.only,
    )
    bench.client = client
    shaping: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        if plan.suite == "latency":
            url = target.endpoint_url or ""
            m = re.fullmatch(r"http://([^/:]+):(\d+)/?", url)
            if not m:
                raise SystemExit(
                    f"the latency profile needs an http://HOST:PORT endpoint, not {url!r}"
                )
            rate = parse_rate(args.rate, what="--rate")
            shaper = stack.enter_context(
                ShaperProcess(
                    f"{m.group(1)}:{m.group(2)}",
                    args.delay_ms,
                    rate,
                    str(workdir / "logs" / "shaper.log"),
                )
            )
            bench.proxy_pid = shaper.pid
            bench.peer_target = dataclasses.replace(
                target, endpoint_url=f"http://127.0.0.1:{shaper.port}"
            )
            shaping = {
                "delay_ms": args.delay_ms,
                "rate_bytes_s": rate,
                "connections": plan.connections,
                "part_size": parse_size(args.latency_part_size, what="--latency-part-size"),
                "proxy": "benchmarks/shaper.py (asyncio + uvloop), delay/2 per direction, "
                "token bucket per connection and direction",
            }
            log(
                f"latency profile: proxy 127.0.0.1:{shaper.port} -> {m.group(1)}:{m.group(2)}, "
                f"RTT +{args.delay_ms:g} ms, {rate / 1e6:g} MB/s per connection"
            )
        bench.make_datasets()
        try:
            bench.upload_fixtures()
            bench.run_all()
        finally:
            for keys in bench.fixture_keys.values():
                with contextlib.suppress(Exception):
                    bench.delete_keys(keys)
    result = assemble(bench, args, machine_info_cached(), started, load_before, plan)
    result["config"]["suite"] = plan.suite
    result["config"]["shaping"] = shaping
    return bench, result


_MACHINE: dict[str, Any] = {}


def machine_info_cached() -> dict[str, Any]:
    if not _MACHINE:
        _MACHINE.update(machine_info())
    return _MACHINE


def redact(argv: list[str]) -> list[str]:
    """The command line without credentials."""
    out: list[str] = []
    hide = False
    for a in argv:
        if hide:
            out.append("***")
            hide = False
        elif a in ("--secret-key", "--access-key"):
            out.append(a)
            hide = True
        elif a.startswith(("--secret-key=", "--access-key=")):
            out.append(a.split("=", 1)[0] + "=***")
        else:
            out.append(a)
    return out


def effective_settings(runs: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    """What a peer's settings left at None resolved to (fastxfer: its TransferConfig)."""
    for r in runs:
        if r["peer"] == label and r.get("ok") and isinstance(r.get("extra"), dict):
            cfg = r["extra"].get("config")
            if isinstance(cfg, dict):
                return cfg
    return None


def assemble(
    bench: Bench,
    args: argparse.Namespace,
    machine: dict[str, Any],
    started: str,
    load_before: list[float] | None,
    plan: Plan,
) -> dict[str, Any]:
    summary = report.summarise(bench.runs)
    for (wname, pname), why in bench.not_applicable.items():
        summary.setdefault(wname, {})[pname] = {"not_applicable": why, "runs": 0, "failed": 0}
    subject = "fastxfer"
    # fastxfer's memory limit as shipped (the `fastxfer` row, or `fastxfer@default`).
    budget = next((p.memory_budget() for p in bench.peers if p.name == subject), None)
    sweep = None
    if plan.sweep is not None:
        sweep = {**plan.sweep, "labels": {str(n): v for n, v in plan.sweep["labels"].items()}}
    checks = report.checks(
        summary,
        subject=subject,
        baseline=args.baseline,
        memory_budget=budget,
        suite=bench.suite,
        sweep=sweep,
    )
    notes = list(plan.notes)
    if bench.warmed:
        cold = [
            f"{name} ({w['passes'][1]['server_cpu_s']:.2f} server CPU-s on the second pass)"
            for name, w in bench.warmed.items()
            if (w["passes"][1]["server_cpu_s"] or 0) > 0.05 + 0.05 * w["bytes"] / 2**30
        ]
        if cold:
            notes.append("warming may not have stuck for: " + ", ".join(cold))
    recold = [
        r
        for r in bench.runs
        if (r.get("rewarm_server_cpu_s") or 0) > 0.05 + 0.05 * r["bytes"] / 2**30
    ]
    if recold:
        notes.append(
            f"before {len(recold)} download run(s) the server had forgotten the objects' MD5s "
            "and the untimed re-warming paid for them again (up to "
            f"{max(r['rewarm_server_cpu_s'] for r in recold):.2f} server CPU-s)"
        )
    others = [r["other_cpu_s"] for r in bench.runs if r.get("other_cpu_s") is not None]
    steals = [r["steal_s"] for r in bench.runs if r.get("steal_s") is not None]
    return {
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": redact(sys.argv[1:]),
        "machine": machine,
        "config": {
            "runs": args.runs,
            "scale": args.scale,
            "peers": [p.label for p in bench.peers],
            "baseline": args.baseline,
            "target": bench.target.public(),
            "server_args": bench.server_args,
            "pause_s": args.pause,
            "wait_idle_s": args.wait_idle,
            "idle_cores": args.idle_cores,
            "sample_interval_s": args.sample_interval,
            "workdir_fs": "tmpfs" if str(bench.workdir).startswith("/dev/shm") else "other",
            "common_concurrency": args.common_concurrency if bench.suite == "loopback" else None,
            "sweep": sweep,
            "variants": plan.variants,
            "warmed": bench.warmed,
        },
        "workloads": {
            w.name: {
                "direction": w.direction,
                "kind": w.kind,
                "count": w.count,
                "size": w.size,
                "total_bytes": w.total_bytes,
                "describe": w.describe(),
                "summary": w.workload.summary,
            }
            for w in bench.workloads
        },
        "peers": {
            p.label: {
                "peer": p.name,
                "summary": p.summary,
                "settings": p.settings,
                "effective": effective_settings(bench.runs, p.label),
                "memory_budget": p.memory_budget(),
            }
            for p in bench.peers
        },
        "metrics": report.METRICS,
        "noise": {
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "other_cpu_s_median": statistics.median(others) if others else None,
            "other_cpu_s_max": max(others) if others else None,
            "steal_s_max": max(steals) if steals else None,
        },
        "summary": summary,
        "checks": [c.as_dict() for c in checks],
        "notes": notes,
        "runs": bench.runs,
    }


if __name__ == "__main__":
    sys.exit(main())
