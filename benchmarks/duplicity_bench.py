"""duplicity full backups through fastxfer vs stock duplicity vs restic:
``python -m benchmarks.duplicity_bench``.

The "Must show" benchmark of the duplicity backend (issue #9).  One mixed data
set (incompressible random files and compressible text-like files, sizes from
4 KiB to tens of MiB), generated deterministically once into a cache on tmpfs,
is backed up in FULL, ``--no-encryption``, to the same embedded ``rclone serve
s3`` (on tmpfs) by:

- ``fastxfer``: ``fastxfer-duplicity ... fastxfer+s3://bucket/prefix`` (defaults);
- ``stock``: ``duplicity ... s3://bucket/prefix`` (boto3 backend, defaults);
- ``stock-async``: the same with ``--asynchronous-upload``;
- ``stock-c4``: the same with ``--concurrency 4``;
- ``restic``: ``restic backup`` to ``s3:http://.../bucket/prefix`` (repository
  initialised untimed just before; ``--no-cache``; restic's own compression
  default) as the reference;
- ``file-floor`` (loopback profile only): stock duplicity to ``file://`` on
  tmpfs, no network at all: what duplicity needs to produce the volumes.

Each duplicity variant runs at every ``--volsizes`` value (restic has no volume
size: one row).  Rows are interleaved run by run, the order rotated every
round; every run is a fresh process with a fresh target prefix, archive dir,
temp dir and ``--name``; medians of ``--runs`` runs.  Two network profiles:
``loopback`` (straight to the server) and ``wan`` (``benchmarks/shaper.py``
between the tools and the server: 40 ms round trip, 8 MB/s per connection).

Measured per run: wall time of the tool's process, MB/s of *source* data,
client CPU (``RUSAGE_CHILDREN`` delta around the tool, i.e. the tool and its
waited-for children), server CPU and shaper CPU (psutil deltas), bytes stored,
and the CPU of anything else on the machine (``noise``).  Checked per run: the
exit status, then, outside the timing, that the backup is complete: for
duplicity the manifest exists and every volume it names is stored with the
SHA1 it records (read straight from the server's directory), and the
signature file is there; for restic ``restic check`` exits 0 and there is one
snapshot.

Results: ``benchmarks/results/duplicity-<UTC timestamp>.json`` / ``.md``,
``duplicity-latest.md`` and ``duplicity-latest.png`` (grouped bars).

    .venv/bin/python -m benchmarks.duplicity_bench --dataset tiny --runs 1      # smoke, ~2 min
    .venv/bin/python -m benchmarks.duplicity_bench --dataset both               # the recorded run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.run import server_cpu

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VENV_BIN = Path(sys.executable).parent
MiB = 1024 * 1024
GENERATOR_VERSION = 1

# -- the data set ------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    total: int
    """Target bytes (the files add up to about this)."""
    small_files: int
    """Number of 4-64 KiB files."""
    medium_share: float
    """Share of the bytes in 256 KiB - 4 MiB files; the rest in large files."""
    large_range: tuple[int, int]
    random_share: float = 0.5
    """Probability that a file is incompressible random bytes (else text-like)."""
    seed: int = 20261127


DATASETS = {
    "tiny": DatasetSpec("tiny", 10 * MiB, 60, 0.4, (2 * MiB, 4 * MiB)),
    "small": DatasetSpec("small", 100 * MiB, 300, 0.4, (8 * MiB, 24 * MiB)),
    "large": DatasetSpec("large", 1024 * MiB, 2000, 0.4, (16 * MiB, 128 * MiB)),
}

_SYLLABLES = [
    "ka",
    "to",
    "ri",
    "men",
    "sa",
    "lo",
    "ver",
    "di",
    "an",
    "tur",
    "pe",
    "nis",
    "co",
    "la",
    "bra",
    "tion",
    "ex",
    "ist",
    "un",
    "der",
    "mo",
    "ni",
    "que",
    "sto",
    "ra",
    "fi",
    "le",
]
_LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"]


def _vocabulary(rng: random.Random, n: int = 6000) -> tuple[list[str], list[float]]:
    words = sorted({"".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(n)})
    rng.shuffle(words)
    # Zipf-like frequencies, as in natural text.
    cum: list[float] = []
    acc = 0.0
    for i in range(len(words)):
        acc += 1.0 / (i + 1)
        cum.append(acc)
    return words, cum


def _text_bytes(rng: random.Random, size: int, vocab: tuple[list[str], list[float]]) -> bytes:
    """Log-like lines: a counter, a level, a path-ish token and Zipf-distributed words."""
    words, cum = vocab
    out: list[str] = []
    n = 0
    line_no = rng.randint(0, 10**9)
    while n < size:
        k = 4000
        ws = rng.choices(words, cum_weights=cum, k=k)
        pos = 0
        lines: list[str] = []
        while pos < k - 20:
            m = rng.randint(4, 16)
            line_no += rng.randint(1, 900)
            lines.append(
                f"{line_no:012d} {rng.choice(_LEVELS)} /{ws[pos]}/{ws[pos + 1]}.py:"
                f"{rng.randint(1, 2000)} " + " ".join(ws[pos + 2 : pos + 2 + m])
            )
            pos += 2 + m
        chunk = "\n".join(lines) + "\n"
        out.append(chunk)
        n += len(chunk)
    return "".join(out).encode()[:size]


def plan_files(spec: DatasetSpec) -> list[tuple[str, int, str]]:
    """(relative path, size, kind) for every file, from the seed alone."""
    rng = random.Random(spec.seed)
    files: list[tuple[str, int, str]] = []
    share = {"random": 0, "text": 0}

    def kind(size: int) -> str:
        # Keep the random share of the bytes near ``random_share`` (whatever the draws).
        behind = share["random"] * (1 - spec.random_share) <= share["text"] * spec.random_share
        k = "random" if behind else "text"
        if size < MiB and rng.random() < 0.1:  # a little disorder in which files are which
            k = "text" if k == "random" else "random"
        share[k] += size
        return k

    def loguniform(lo: int, hi: int) -> int:
        return int(lo * (hi / lo) ** rng.random())

    for i in range(spec.small_files):
        size = loguniform(4096, 64 * 1024)
        files.append((f"small/d{i % 16:02d}/f{i:05d}", size, kind(size)))
    used = sum(f[1] for f in files)
    medium_budget = int((spec.total - used) * spec.medium_share)
    i = 0
    while medium_budget > 0:
        size = min(loguniform(256 * 1024, 4 * MiB), max(medium_budget, 4096))
        files.append((f"medium/d{i % 8:02d}/m{i:04d}", size, kind(size)))
        medium_budget -= size
        i += 1
    used = sum(f[1] for f in files)
    left = spec.total - used
    i = 0
    while left > 0:
        size = min(loguniform(*spec.large_range), left)
        if size < 64 * 1024:
            break
        files.append((f"large/l{i:03d}", size, kind(size)))
        left -= size
        i += 1
    return files


def dataset_dir(spec: DatasetSpec, cache_root: Path) -> tuple[Path, dict[str, Any]]:
    """The data set, generated once into ``cache_root`` (reused when complete)."""
    files = plan_files(spec)
    key = hashlib.sha256(json.dumps([GENERATOR_VERSION, asdict(spec), files]).encode()).hexdigest()[
        :12
    ]
    root = cache_root / f"{spec.name}-{key}"
    marker = root / ".complete.json"
    if marker.exists():
        return root / "data", json.loads(marker.read_text())
    if root.exists():
        shutil.rmtree(root)
    data = root / "data"
    log(f"generating data set {spec.name} ({spec.total / MiB:.0f} MiB) in {root}")
    t0 = time.perf_counter()
    rng = random.Random(spec.seed + 1)
    vocab = _vocabulary(random.Random(spec.seed + 2))
    by_kind = {"random": 0, "text": 0}
    for rel, size, k in files:
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = rng.randbytes(size) if k == "random" else _text_bytes(rng, size, vocab)
        path.write_bytes(payload)
        by_kind[k] += size
    info: dict[str, Any] = {
        "name": spec.name,
        "key": key,
        "files": len(files),
        "bytes": sum(f[1] for f in files),
        "bytes_random": by_kind["random"],
        "bytes_text": by_kind["text"],
        "gzip6_ratio_text_sample": _gzip_ratio(data, files),
        "spec": asdict(spec),
        "generated_s": round(time.perf_counter() - t0, 1),
    }
    marker.write_text(json.dumps(info, indent=1))
    log(
        f"generated {info['files']} files, {info['bytes'] / MiB:.1f} MiB in {info['generated_s']} s"
    )
    return data, info


def _gzip_ratio(data: Path, files: list[tuple[str, int, str]]) -> float | None:
    import zlib

    texts = [f for f in files if f[2] == "text"][:20]
    raw = b"".join((data / f[0]).read_bytes()[: 1 * MiB] for f in texts)
    return round(len(raw) / len(zlib.compress(raw, 6)), 2) if raw else None


# -- helpers -----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _psutil() -> Any:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    return psutil


def machine_busy() -> float:
    t = _psutil().cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0))


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_for_quiet(max_load: float, limit_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is at most ``max_load`` (polling)."""
    t0 = time.monotonic()
    first = loadavg()
    while True:
        now = loadavg()
        if now[0] <= max_load:
            break
        waited = time.monotonic() - t0
        if waited >= limit_s:
            log(f"load still {now} after {waited:.0f} s: going ahead (noted in the result)")
            break
        log(f"load {now}: waiting for <= {max_load}")
        time.sleep(poll_s)
    return {"load_first": first, "load_go": loadavg(), "waited_s": round(time.monotonic() - t0)}


def wait_idle(limit_s: float, cores: float, ours: list[int | None]) -> float:
    """Wait (up to ``limit_s``) until other processes use <= ``cores`` for 2 s."""
    t0 = time.perf_counter()
    while True:
        b0, o0 = machine_busy(), sum(server_cpu(p) or 0.0 for p in ours)
        time.sleep(2.0)
        b1, o1 = machine_busy(), sum(server_cpu(p) or 0.0 for p in ours)
        used = (b1 - b0 - (o1 - o0)) / 2.0
        waited = time.perf_counter() - t0
        if used <= cores or waited >= limit_s:
            return round(waited, 1)


# -- variants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    tool: str
    """fastxfer, stock, restic or file."""
    summary: str
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    volsized: bool = True
    loopback_only: bool = False


VARIANTS = {
    "fastxfer": Variant(
        "fastxfer", "fastxfer", "fastxfer-duplicity ... fastxfer+s3://bucket/prefix (defaults)"
    ),
    "stock": Variant(
        "stock", "stock", "duplicity ... s3://bucket/prefix (boto3 backend, defaults)"
    ),
    "stock-async": Variant(
        "stock-async",
        "stock",
        "duplicity --asynchronous-upload ... s3://",
        ("--asynchronous-upload",),
    ),
    "stock-c4": Variant(
        "stock-c4", "stock", "duplicity --concurrency 4 ... s3://", ("--concurrency", "4")
    ),
    "restic": Variant(
        "restic",
        "restic",
        "restic backup to s3:http://.../bucket/prefix (--no-cache, default compression)",
        volsized=False,
    ),
    "file-floor": Variant(
        "file-floor",
        "file",
        "duplicity ... file:// on tmpfs: producing the volumes, no network (reference)",
        loopback_only=True,
    ),
}
DEFAULT_VARIANTS = "fastxfer,stock,stock-async,stock-c4,restic,file-floor"
STOCK_VARIANTS = ("stock", "stock-async", "stock-c4")


def parse_extra_fastxfer(items: list[str]) -> list[Variant]:
    """``NAME:VAR=VAL[,VAR=VAL]`` -> an extra fastxfer variant with those environment values."""
    out = []
    for item in items:
        name, _, rest = item.partition(":")
        env = tuple(tuple(kv.split("=", 1)) for kv in rest.split(",") if kv)
        if not name or not all(len(kv) == 2 for kv in env):
            raise SystemExit(f"--extra-fastxfer {item!r}: expected NAME:VAR=VAL[,VAR=VAL]")
        full = f"fastxfer@{name}"
        out.append(
            Variant(
                full,
                "fastxfer",
                "fastxfer-duplicity with " + " ".join(f"{k}={v}" for k, v in env),
                env=env,  # type: ignore[arg-type]
            )
        )
    return out


@dataclass(frozen=True)
class Row:
    variant: Variant
    volsize: int | None

    @property
    def key(self) -> str:
        return self.variant.name if self.volsize is None else f"{self.variant.name}/v{self.volsize}"


# -- the bench ---------------------------------------------------------------------------


@dataclass
class Server:
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    root: Path
    pid: int | None
    client: Any


@dataclass
class Ctx:
    args: argparse.Namespace
    workdir: Path
    server: Server
    aws_config: Path
    fastxfer_path: str | None = None
    """The fastxfer snapshot's directory (--fastxfer-rev), else None (the work tree)."""
    failures: list[str] = field(default_factory=list)


def tool_env(ctx: Ctx, endpoint: str, variant: Variant) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "FASTXFER_", "RESTIC_", "PASSPHRASE"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=ctx.server.access_key,
        AWS_SECRET_ACCESS_KEY=ctx.server.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=str(ctx.aws_config),
        AWS_SHARED_CREDENTIALS_FILE=str(ctx.workdir / "no-credentials"),
        # rclone serve s3 needs these with botocore's flexible checksums (test-servers.md).
        AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
        AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
        RESTIC_PASSWORD="fastxfer-bench",
        PYTHONUNBUFFERED="1",
    )
    env.update(dict(variant.env))
    return env


def target_url(variant: Variant, endpoint: str, bucket: str, prefix: str, workdir: Path) -> str:
    if variant.tool == "fastxfer":
        return f"fastxfer+s3://{bucket}/{prefix}"
    if variant.tool == "stock":
        return f"s3://{bucket}/{prefix}"
    if variant.tool == "file":
        return f"file://{workdir / 'file-target' / prefix}"
    return f"s3:{endpoint}/{bucket}/{prefix}"


def duplicity_argv(
    variant: Variant, volsize: int, src: Path, url: str, endpoint: str, run_dir: Path, name: str
) -> list[str]:
    exe = "fastxfer-duplicity" if variant.tool == "fastxfer" else "duplicity"
    argv = [
        str(VENV_BIN / exe),
        "full",
        "--no-encryption",
        "--volsize",
        str(volsize),
        "--archive-dir",
        str(run_dir / "archive"),
        "--name",
        name,
        "--tempdir",
        str(run_dir / "tmp"),
    ]
    if variant.tool != "file":
        argv += ["--s3-endpoint-url", endpoint, "--s3-region-name", "us-east-1"]
    argv += [*variant.extra_args, str(src), url]
    return argv


def run_tool(
    argv: list[str], env: dict[str, str], log_path: Path, timeout: float, cwd: Path
) -> tuple[int, float, float]:
    """Run ``argv``; return (exit status, wall s, CPU s of it and its waited-for children)."""
    with open(log_path, "ab") as logf:
        logf.write(("$ " + " ".join(argv) + "\n").encode())
        logf.flush()
        c0 = children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            logf.write(f"\n*** killed after {timeout:.0f} s\n".encode())
            rc = rc if rc else -9
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): the tool runs in its own session, stop it too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        wall = time.perf_counter() - t0
        cpu = children_cpu() - c0
    return rc, wall, cpu


def list_prefix(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) :]] = int(o["Size"])
    return out


def delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    keys = [prefix + k for k in list_prefix(client, bucket, prefix)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
        )


_VOL_RE = re.compile(rb"^Volume (\d+):", re.M)
_HASH_RE = re.compile(rb"^\s+Hash SHA1 ([0-9a-f]+)", re.M)


def verify_duplicity(objects: dict[str, int], read: Any) -> tuple[bool, str, int]:
    """(ok, message, volumes): the manifest exists, every volume it names is stored
    with its SHA1, the signature file is there, nothing else is missing."""
    manifests = [k for k in objects if re.fullmatch(r"duplicity-full\.[0-9TZ]+\.manifest", k)]
    sigs = [k for k in objects if k.startswith("duplicity-full-signatures.")]
    if len(manifests) != 1:
        return False, f"{len(manifests)} manifests in {sorted(objects)[:6]}...", 0
    if len(sigs) != 1:
        return False, f"{len(sigs)} signature files", 0
    man = read(manifests[0])
    stamp = manifests[0][len("duplicity-full.") : -len(".manifest")]
    blocks = re.split(rb"(?m)^(?=Volume \d+:)", man)
    vols = 0
    for block in blocks:
        m = _VOL_RE.match(block)
        if not m:
            continue
        n = int(m.group(1))
        name = f"duplicity-full.{stamp}.vol{n}.difftar.gz"
        if name not in objects:
            return False, f"volume {n} named by the manifest is missing", vols
        h = _HASH_RE.search(block)
        if h is None:
            return False, f"volume {n}: no SHA1 in the manifest", vols
        if hashlib.sha1(read(name)).hexdigest() != h.group(1).decode():
            return False, f"volume {n}: SHA1 differs from the manifest", vols
        vols += 1
    stored = [k for k in objects if k.endswith(".difftar.gz")]
    if vols == 0 or len(stored) != vols:
        return False, f"manifest names {vols} volumes, {len(stored)} stored", vols
    return True, f"manifest + {vols} volumes (SHA1 ok) + signatures", vols


def one_run(
    ctx: Ctx,
    row: Row,
    src: Path,
    profile: str,
    endpoint: str,
    proxy_pid: int | None,
    rnd: int,
    idx: int,
) -> dict[str, Any]:
    args = ctx.args
    v = row.variant
    tag = f"{profile}-{row.key.replace('/', '-')}-r{rnd}-{secrets.token_hex(3)}"
    run_dir = ctx.workdir / "runs" / tag
    (run_dir / "tmp").mkdir(parents=True)
    (run_dir / "archive").mkdir()
    prefix = f"bench/{tag}"
    url = target_url(v, endpoint, ctx.server.bucket, prefix, ctx.workdir)
    env = tool_env(ctx, endpoint, v)
    log_path = ctx.workdir / "logs" / f"{tag}.log"
    rec: dict[str, Any] = {
        "row": row.key,
        "variant": v.name,
        "volsize": row.volsize,
        "profile": profile,
        "round": rnd,
        "position": idx,
        "prefix": prefix,
        "log": log_path.name,
    }
    if v.tool == "restic":
        # Untimed: the repository is made before the backup (duplicity has no such step).
        rc, wall, _ = run_tool(
            ["restic", "-r", url, "-o", "s3.bucket-lookup=path", "--no-cache", "init"],
            env,
            log_path,
            args.timeout,
            run_dir,
        )
        rec["init_s"] = round(wall, 2)
        if rc != 0:
            rec.update(ok=False, exit=rc, error="restic init failed")
            return rec
        argv = [
            "restic",
            "-r",
            url,
            "-o",
            "s3.bucket-lookup=path",
            "--no-cache",
            "backup",
            "--host",
            "bench",
            "--tag",
            tag,
            ".",
        ]
        cwd = src
    else:
        argv = duplicity_argv(v, row.volsize or 0, src, url, endpoint, run_dir, f"b-{tag}")
        cwd = run_dir
    rec["argv"] = [a.replace(str(ctx.workdir), "$WORK") for a in argv]
    rec["idle_wait_s"] = (
        wait_idle(args.wait_idle, args.idle_cores, [ctx.server.pid, proxy_pid])
        if args.wait_idle > 0
        else 0.0
    )
    rec["load_before"] = loadavg()
    srv0, px0 = server_cpu(ctx.server.pid), server_cpu(proxy_pid)
    busy0, me0 = machine_busy(), self_cpu()
    rc, wall, cpu = run_tool(argv, env, log_path, args.timeout, cwd)
    busy1, me1 = machine_busy(), self_cpu()
    srv1, px1 = server_cpu(ctx.server.pid), server_cpu(proxy_pid)
    server_s = (srv1 - srv0) if srv0 is not None and srv1 is not None else None
    proxy_s = (px1 - px0) if px0 is not None and px1 is not None else None
    noise = (busy1 - busy0) - cpu - (server_s or 0) - (proxy_s or 0) - (me1 - me0)
    rec.update(
        exit=rc,
        wall_s=round(wall, 3),
        client_cpu_s=round(cpu, 2),
        server_cpu_s=None if server_s is None else round(server_s, 2),
        proxy_cpu_s=None if proxy_s is None else round(proxy_s, 2),
        noise_cpu_s=round(max(noise, 0.0), 2),
        load_after=loadavg(),
    )
    text = log_path.read_text(errors="replace")
    rec["retries"] = len(re.findall(r"Attempt of \w+ Nr\. \d+ failed", text))
    if m := re.search(r"^ElapsedTime ([0-9.]+)", text, re.M):
        # duplicity's own ElapsedTime: from the start of the backup proper to the last volume
        # handed to the backend (synchronous uploads included); wall - this = start-up, the
        # uploads still running after the last volume, signature/manifest and exit.
        rec["dup_elapsed_s"] = float(m.group(1))
        rec["outside_elapsed_s"] = round(wall - rec["dup_elapsed_s"], 2)
    # -- verification, untimed --
    ok = rc == 0
    msg = "" if ok else f"exit status {rc}"
    if ok and v.tool == "file":
        tdir = ctx.workdir / "file-target" / prefix
        objects = {p.name: p.stat().st_size for p in tdir.iterdir()}
        ok, msg, rec["volumes"] = verify_duplicity(objects, lambda k: (tdir / k).read_bytes())
        rec["stored_bytes"] = sum(objects.values())
        shutil.rmtree(tdir, ignore_errors=True)
    elif ok and v.tool in ("fastxfer", "stock"):
        objects = list_prefix(ctx.server.client, ctx.server.bucket, prefix + "/")
        base = ctx.server.root / ctx.server.bucket / prefix
        ok, msg, rec["volumes"] = verify_duplicity(objects, lambda k: (base / k).read_bytes())
        rec["stored_bytes"] = sum(objects.values())
        rec["objects"] = len(objects)
    elif ok and v.tool == "restic":
        local = f"s3:{ctx.server.endpoint_url}/{ctx.server.bucket}/{prefix}"
        venv = tool_env(ctx, ctx.server.endpoint_url, v)
        crc, cwall, _ = run_tool(
            ["restic", "-r", local, "-o", "s3.bucket-lookup=path", "--no-cache", "check"],
            venv,
            log_path,
            args.timeout,
            run_dir,
        )
        rec["check_s"] = round(cwall, 2)
        snaps = subprocess.run(
            [
                "restic",
                "-r",
                local,
                "-o",
                "s3.bucket-lookup=path",
                "--no-cache",
                "snapshots",
                "--json",
            ],
            env=venv,
            check=False,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        try:
            n_snaps = len(json.loads(snaps.stdout or "null") or [])
        except json.JSONDecodeError:
            n_snaps = -1
        objects = list_prefix(ctx.server.client, ctx.server.bucket, prefix + "/")
        rec["stored_bytes"] = sum(objects.values())
        rec["objects"] = len(objects)
        ok = crc == 0 and snaps.returncode == 0 and n_snaps == 1
        msg = f"restic check exit {crc}, {n_snaps} snapshot(s)"
    if v.tool in ("fastxfer", "stock", "restic"):
        delete_prefix(ctx.server.client, ctx.server.bucket, prefix + "/")
    rec["ok"] = ok
    rec["verify"] = msg
    if ok and not args.keep_workdir:
        shutil.rmtree(run_dir, ignore_errors=True)
    if not ok:
        ctx.failures.append(f"{profile} {row.key} round {rnd}: {msg} (log {log_path})")
    return rec


@contextlib.contextmanager
def start_server(workdir: Path) -> Iterator[Server]:
    from fastxfer.localserver import LocalS3Server

    srv = LocalS3Server(
        root=str(workdir / "server"),
        extra_args=("--ignore-checksum",),
        log_path=str(workdir / "logs" / "server.log"),
    )
    with srv:
        bucket = srv.make_bucket()
        yield Server(
            srv.endpoint_url,
            bucket,
            srv.access_key,
            srv.secret_key,
            workdir / "server",
            srv.pid,
            srv.client(),
        )


def rows_for(variants: list[Variant], volsizes: list[int], profile: str) -> list[Row]:
    rows: list[Row] = []
    for v in variants:
        if v.loopback_only and profile != "loopback":
            continue
        if v.volsized:
            rows += [Row(v, vs) for vs in volsizes]
        else:
            rows.append(Row(v, None))
    return rows


def run_group(
    ctx: Ctx, dataset: str, src: Path, profile: str, rows: list[Row]
) -> list[dict[str, Any]]:
    args = ctx.args
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        proxy_pid = None
        endpoint = ctx.server.endpoint_url
        if profile == "wan":
            from fastxfer.units import parse_rate

            from benchmarks.shaper import ShaperProcess

            sp = ShaperProcess(
                ctx.server.endpoint_url.removeprefix("http://"),
                args.delay_ms,
                parse_rate(args.rate),
                str(ctx.workdir / "logs" / "shaper.log"),
            )
            if ctx.fastxfer_path:
                # ShaperProcess runs ``-m benchmarks.shaper`` from the repository root, where
                # the work tree's fastxfer comes before PYTHONPATH: put the snapshot first.
                assert sp.argv[1:3] == ["-m", "benchmarks.shaper"], sp.argv
                sp.argv[1:3] = [
                    "-c",
                    f"import runpy, sys; sys.path.insert(0, {ctx.fastxfer_path!r}); "
                    "runpy.run_module('benchmarks.shaper', run_name='__main__', alter_sys=True)",
                ]
            shaper = stack.enter_context(sp)
            proxy_pid = shaper.pid
            endpoint = f"http://127.0.0.1:{shaper.port}"
        for rnd in range(args.runs):
            k = rnd % len(rows)
            order = rows[k:] + rows[:k]
            for idx, row in enumerate(order):
                discarded: list[dict[str, Any]] = []
                while True:
                    rec = one_run(ctx, row, src, profile, endpoint, proxy_pid, rnd, idx)
                    rec["dataset"] = dataset
                    log(one_line(rec))
                    time.sleep(args.pause)
                    noisy = (
                        args.redo_noisy > 0
                        and rec.get("ok")
                        and rec["noise_cpu_s"] > args.redo_noisy * rec["wall_s"]
                    )
                    if not noisy or len(discarded) >= args.redo_max:
                        break
                    log(f"  noise {rec['noise_cpu_s']} CPU-s in {rec['wall_s']} s: run again")
                    discarded.append(rec)
                if discarded:
                    rec["discarded_noisy"] = discarded
                records.append(rec)
    return records


def one_line(rec: dict[str, Any]) -> str:
    if "wall_s" not in rec:
        where = f"{rec['dataset']} {rec['profile']} {rec['row']} r{rec['round']}"
        return f"{where}: FAILED {rec.get('error')}"
    return (
        f"{rec['dataset']} {rec['profile']} {rec['row']:<18} r{rec['round']} "
        f"{rec['wall_s']:7.2f} s  client {rec['client_cpu_s']:6.2f} s  server "
        f"{rec['server_cpu_s']} s  proxy {rec['proxy_cpu_s']}  noise {rec['noise_cpu_s']}  "
        f"stored {rec.get('stored_bytes', 0) / MiB:.1f} MiB  "
        f"{'ok' if rec['ok'] else 'FAILED'}: {rec['verify']}"
    )


# -- summary, report, chart --------------------------------------------------------------


def summarize(
    records: list[dict[str, Any]], datasets: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["profile"], r["row"]), []).append(r)
    out = []
    for (ds, prof, row), runs in groups.items():
        good = [r for r in runs if r.get("ok")]
        src_bytes = datasets[ds]["bytes"]
        s: dict[str, Any] = {
            "dataset": ds,
            "profile": prof,
            "row": row,
            "variant": runs[0]["variant"],
            "volsize": runs[0]["volsize"],
            "runs": len(runs),
            "ok_runs": len(good),
        }
        if good:
            walls = [r["wall_s"] for r in good]

            def med(key: str, good: list[dict[str, Any]] = good) -> float | None:
                vals = [r[key] for r in good if r.get(key) is not None]
                return round(statistics.median(vals), 2) if vals else None

            s.update(
                wall_s=round(statistics.median(walls), 2),
                wall_min=round(min(walls), 2),
                wall_max=round(max(walls), 2),
                mb_s=round(src_bytes / statistics.median(walls) / 1e6, 1),
                mb_s_min=round(src_bytes / max(walls) / 1e6, 1),
                mb_s_max=round(src_bytes / min(walls) / 1e6, 1),
                client_cpu_s=med("client_cpu_s"),
                server_cpu_s=med("server_cpu_s"),
                proxy_cpu_s=med("proxy_cpu_s"),
                noise_cpu_s=med("noise_cpu_s"),
                stored_mib=round((med("stored_bytes") or 0) / MiB, 1),
                outside_elapsed_s=med("outside_elapsed_s"),
                retries=sum(r.get("retries", 0) for r in good),
            )
        out.append(s)
    return out


def _find(summary: list[dict[str, Any]], ds: str, prof: str, row: str) -> dict[str, Any] | None:
    for s in summary:
        if (s["dataset"], s["profile"], s["row"]) == (ds, prof, row) and s.get("wall_s"):
            return s
    return None


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data set, profile and volsize: fastxfer's speed-up (stock wall / fastxfer wall)."""
    out = []
    for s in summary:
        if s["variant"] != "fastxfer" or not s.get("wall_s"):
            continue
        ds, prof, vs = s["dataset"], s["profile"], s["volsize"]
        r: dict[str, Any] = {
            "dataset": ds,
            "profile": prof,
            "volsize": vs,
            "fastxfer_s": s["wall_s"],
        }
        stock = _find(summary, ds, prof, f"stock/v{vs}")
        if stock:
            r["vs_stock"] = round(stock["wall_s"] / s["wall_s"], 4)
        best = None
        for name in STOCK_VARIANTS:
            cand = _find(summary, ds, prof, f"{name}/v{vs}")
            if cand and (best is None or cand["wall_s"] < best["wall_s"]):
                best = cand
        if best:
            r["best_stock"] = best["variant"]
            r["vs_best_stock"] = round(best["wall_s"] / s["wall_s"], 4)
        restic = _find(summary, ds, prof, "restic")
        if restic:
            r["vs_restic"] = round(restic["wall_s"] / s["wall_s"], 4)
        floor = _find(summary, ds, "loopback", f"file-floor/v{vs}")
        if floor:
            r["floor_s"] = floor["wall_s"]
        out.append(r)
    return out


def checks(rat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rat:
        where = f"{r['dataset']} {r['profile']} --volsize {r['volsize']}"
        if r["profile"] == "loopback":
            if "vs_stock" in r:
                out.append(
                    _check(where, "fastxfer not slower than stock s3://", r["vs_stock"], 1.0)
                )
            if "vs_best_stock" in r:
                out.append(
                    _check(
                        where,
                        f"fastxfer not slower than the best stock variant ({r['best_stock']})",
                        r["vs_best_stock"],
                        1.0,
                    )
                )
        else:
            if "vs_stock" in r:
                out.append(_check(where, "fastxfer >= 2x stock s3://", r["vs_stock"], 2.0))
            if "vs_best_stock" in r:
                out.append(
                    _check(
                        where,
                        f"fastxfer >= 1.3x the best stock variant ({r['best_stock']})",
                        r["vs_best_stock"],
                        1.3,
                    )
                )
        if "vs_restic" in r:
            out.append(
                {
                    "where": where,
                    "what": "fastxfer vs restic (reference, no target)",
                    "value": r["vs_restic"],
                    "target": None,
                    "pass": None,
                }
            )
    return out


def _check(where: str, what: str, value: float, target: float) -> dict[str, Any]:
    return {"where": where, "what": what, "value": value, "target": target, "pass": value >= target}


def render_md(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"# duplicity full backups: fastxfer vs stock duplicity vs restic ({result['started']})",
        "",
    ]
    m = result["machine"]
    lines += [
        f"{m.get('cpu_model')}, {m.get('cores')} cores; "
        f"{m.get('duplicity')}, {m.get('restic')}, boto3 {m['packages'].get('boto3')}, "
        f"{m.get('rclone')} (`serve s3 --ignore-checksum`, root on tmpfs).",
        "",
        "Rows interleaved (order rotated every round), every run a fresh process and a fresh "
        "target prefix; medians (min–max). FULL backups with `--no-encryption`; source, "
        "duplicity's temp and archive dirs and the server's root on tmpfs. MB/s = source bytes "
        "/ wall s. Noise = other processes' CPU during a run (median per row in the tables).",
        "",
    ]
    for src in _sources(result):
        groups = ", ".join(f"{d} {p}" for d, p in src["groups"])
        lines += [
            f"- {groups}: `{' '.join(src['argv'])}` ({src['started']} – {src['finished']}; "
            f"{src['runs']} runs per row); {_fx_line(src)} Load (1/5/15-min) at the start "
            f"{src['quiet']['load_go']} (waited {src['quiet']['waited_s']} s for <= "
            f"{src['max_load']}), at the end {src['load_end']}; noise max "
            f"{src['noise_max']} CPU-s. " + _redo_line(src),
        ]
    lines.append("")
    for ds, info in result["datasets"].items():
        lines.append(
            f"Data set **{ds}**: {info['files']} files, {info['bytes'] / MiB:.1f} MiB "
            f"({info['bytes_random'] / MiB:.0f} MiB random, {info['bytes_text'] / MiB:.0f} MiB "
            f"text-like, gzip -6 ratio of the text ~{info['gzip6_ratio_text_sample']}x), "
            f"seed {info['spec']['seed']}."
        )
    lines.append("")
    if cfg.get("wan_profiles_used"):
        lines += [
            f"WAN profile: `benchmarks/shaper.py` between the tools and the server, "
            f"{cfg['delay_ms']:g} ms round trip, {cfg['rate']}/s per connection and direction.",
            "",
        ]
    summary = result["summary"]
    rat = {(r["dataset"], r["profile"], r["volsize"]): r for r in result["ratios"]}
    for ds in result["datasets"]:
        for prof in ("loopback", "wan"):
            rows = [s for s in summary if s["dataset"] == ds and s["profile"] == prof]
            if not rows:
                continue
            lines += [
                f"### {ds} data set, {prof}",
                "",
                "| variant | volsize | wall s | MB/s | client CPU s | server CPU s | proxy CPU s "
                "| stored MiB | wall − ElapsedTime s | noise CPU s | runs ok "
                "| fastxfer speed-up vs this |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for s in rows:
                if not s.get("wall_s"):
                    lines.append(
                        f"| {s['variant']} | {s['volsize'] or '–'} | failed | | | | | | | "
                        f"| 0/{s['runs']} | |"
                    )
                    continue
                fx = None
                if s["variant"] != "fastxfer":
                    vs_list = (
                        [s["volsize"]]
                        if s["volsize"]
                        else sorted({r[2] for r in rat if r[0] == ds and r[1] == prof})
                    )
                    parts = []
                    for vs in vs_list:
                        f = _find(summary, ds, prof, f"fastxfer/v{vs}")
                        if f:
                            parts.append(
                                f"{s['wall_s'] / f['wall_s']:.2f}x"
                                + ("" if s["volsize"] else f" (v{vs})")
                            )
                    fx = ", ".join(parts) if parts else None
                bold = "**" if s["variant"] == "fastxfer" else ""
                lines.append(
                    f"| {bold}{s['variant']}{bold} | {s['volsize'] or '–'} | "
                    f"{bold}{s['wall_s']:.2f}{bold} ({s['wall_min']:.2f}–{s['wall_max']:.2f}) | "
                    f"{bold}{s['mb_s']:.1f}{bold} | {_fmt(s['client_cpu_s'])} | "
                    f"{_fmt(s['server_cpu_s'])} | {_fmt(s['proxy_cpu_s'])} | "
                    f"{s['stored_mib']:.1f} | {_fmt(s.get('outside_elapsed_s'))} | "
                    f"{_fmt(s['noise_cpu_s'])} | "
                    f"{s['ok_runs']}/{s['runs']} | {fx or '–'} |"
                )
            lines.append("")
    lines += [
        "### Ratios and targets",
        "",
        "Speed-up = the other's median wall time / fastxfer's (above 1: fastxfer is faster).",
        "",
        "| data set | profile | volsize | fastxfer s | vs stock s3:// | vs best stock (which) "
        "| vs restic | duplicity's file:// floor s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["ratios"]:
        lines.append(
            f"| {r['dataset']} | {r['profile']} | {r['volsize']} | {r['fastxfer_s']:.2f} | "
            f"{_x(r.get('vs_stock'))} | {_x(r.get('vs_best_stock'))} "
            f"({r.get('best_stock', '–')}) | "
            f"{_x(r.get('vs_restic'))} | {_fmt(r.get('floor_s'))} |"
        )
    lines.append("")
    for c in result["checks"]:
        if c["pass"] is None:
            lines.append(f"- info {c['where']}: {c['what']}: {c['value']:.2f}x")
        else:
            verdict = "**PASS**" if c["pass"] else "**FAIL**"
            lines.append(
                f"- {verdict} {c['where']}: {c['what']}: {c['value']:.3f}x (target "
                f"{c['target']}x, margin {100 * (c['value'] / c['target'] - 1):+.1f}%)"
            )
    lines += ["", "Variants:", ""]
    for name, summ in cfg["variant_summaries"].items():
        lines.append(f"- `{name}`: {summ}")
    lines += [
        "",
        "Verification after every run (untimed): duplicity: the manifest exists, every volume it "
        "names is stored and its SHA1 matches the manifest, the signature file exists, no extra "
        "volume; restic: `restic check` exits 0 and `restic snapshots` lists one snapshot. "
        "restic's `init` is run untimed before each backup.",
    ]
    if result["failures"]:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in result["failures"]]
    if result.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _sources(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The invocations a result comes from (one, or several for a combined result)."""
    if "sources" in result:
        return list(result["sources"])
    return [_source_of(result, result["records"], None)]


def _source_of(
    result: dict[str, Any], records: list[dict[str, Any]], file: str | None
) -> dict[str, Any]:
    cfg = result["config"]
    return {
        "file": file,
        "argv": result["argv"],
        "started": result["started"],
        "finished": result.get("finished"),
        "groups": list(dict.fromkeys((r["dataset"], r["profile"]) for r in records)),
        "runs": cfg["runs"],
        "max_load": cfg["max_load"],
        "redo_noisy": cfg.get("redo_noisy"),
        "redo_max": cfg.get("redo_max"),
        "quiet": result["quiet"],
        "load_end": result["load_end"],
        "noise_max": max((r.get("noise_cpu_s") or 0 for r in records), default=0),
        "discarded_noisy": sum(len(r.get("discarded_noisy", [])) for r in records),
        "fastxfer_source": result.get("fastxfer_source"),
        "git": result["machine"]["git"],
        "interrupted": result.get("interrupted"),
    }


def _redo_line(src: dict[str, Any]) -> str:
    if not src.get("redo_noisy"):
        return "Noisy runs were kept (no --redo-noisy)."
    return (
        f"A run during which other processes used more than {src['redo_noisy']:g} cores on "
        f"average was run again (up to {src['redo_max']} times, the last attempt kept): "
        f"{src['discarded_noisy']} run(s) discarded for noise (kept in the JSON)."
    )


def _fx_line(src: dict[str, Any]) -> str:
    fx = src.get("fastxfer_source") or {}
    if fx.get("rev"):
        return f"fastxfer as committed at `{fx['commit'][:10]}` (a clean snapshot)."
    g = src["git"]
    dirty = " (work tree modified)" if g.get("dirty") else ""
    return f"fastxfer from the work tree at `{(g.get('commit') or '?')[:10]}`{dirty}."


def combine(paths: list[Path]) -> dict[str, Any]:
    """One result from several result files: for every (data set, profile) the records of the
    LAST file that has it (so a rerun of one group replaces an earlier or partial one)."""
    results = [json.loads(p.read_text()) for p in paths]
    owner: dict[tuple[str, str], int] = {}
    for i, r in enumerate(results):
        for rec in r["records"]:
            owner[(rec["dataset"], rec["profile"])] = i
    records: list[dict[str, Any]] = []
    sources = []
    datasets: dict[str, dict[str, Any]] = {}
    summaries: dict[str, str] = {}
    for i, (path, r) in enumerate(zip(paths, results, strict=True)):
        mine = [rec for rec in r["records"] if owner[(rec["dataset"], rec["profile"])] == i]
        if not mine:
            continue
        for rec in mine:
            if "outside_elapsed_s" not in rec and rec.get("dup_elapsed_s") is not None:
                rec["outside_elapsed_s"] = round(rec["wall_s"] - rec["dup_elapsed_s"], 2)
        records += mine
        sources.append(_source_of(r, mine, path.name))
        for rec in mine:
            datasets[rec["dataset"]] = r["datasets"][rec["dataset"]]
        summaries.update(r["config"]["variant_summaries"])
    base = results[0]
    summary = summarize(records, datasets)
    rat = ratios(summary)
    config = dict(base["config"])
    config["variant_summaries"] = summaries
    config["wan_profiles_used"] = any(r["profile"] == "wan" for r in records)
    return {
        "kind": "duplicity-bench-combined",
        "started": min(s["started"] for s in sources),
        "finished": max(s["finished"] or "" for s in sources),
        "argv": [
            "python",
            "-m",
            "benchmarks.duplicity_bench",
            "--render",
            ",".join(p.name for p in paths),
        ],
        "config": config,
        "machine": base["machine"],
        "datasets": datasets,
        "sources": sources,
        "records": records,
        "summary": summary,
        "ratios": rat,
        "checks": checks(rat),
        "failures": [f for r in results for f in r.get("failures", [])],
        "notes": [n for r in results for n in r.get("notes", [])],
    }


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


COLORS = {
    "fastxfer": "#d62728",
    "stock": "#1f77b4",
    "stock-async": "#aec7e8",
    "stock-c4": "#ff7f0e",
    "restic": "#2ca02c",
    "file-floor": "#7f7f7f",
}


def render_png(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = [s for s in result["summary"] if s.get("wall_s")]
    panels = sorted(
        {(s["dataset"], s["profile"]) for s in summary},
        key=lambda p: (list(result["datasets"]).index(p[0]), p[1] != "loopback"),
    )
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (ds, prof) in zip(axes[0], panels, strict=True):
        rows = [s for s in summary if s["dataset"] == ds and s["profile"] == prof]
        volsizes = sorted({s["volsize"] for s in rows if s["volsize"]})
        variants = list(dict.fromkeys(s["variant"] for s in rows if s["volsize"]))
        groups = [f"--volsize {v}" for v in volsizes]
        width = 0.8 / max(len(variants), 1)
        for j, var in enumerate(variants):
            xs, ys, lo, hi = [], [], [], []
            for i, vs in enumerate(volsizes):
                s = next((r for r in rows if r["variant"] == var and r["volsize"] == vs), None)
                if s is None:
                    continue
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                ys.append(s["mb_s"])
                lo.append(s["mb_s"] - s["mb_s_min"])
                hi.append(s["mb_s_max"] - s["mb_s"])
            ax.bar(
                xs,
                ys,
                width,
                yerr=[lo, hi],
                capsize=2,
                label=var,
                color=COLORS.get(var, "#ff9896" if var.startswith("fastxfer@") else "#9467bd"),
                hatch="//" if "@" in var else None,
            )
            for x, y in zip(xs, ys, strict=True):
                ax.text(x, y, f"{y:.0f}", ha="center", va="bottom", fontsize=7)
        restic = next((r for r in rows if r["variant"] == "restic"), None)
        if restic is not None:
            i = len(volsizes)
            groups.append("restic")
            ax.bar(
                [i],
                [restic["mb_s"]],
                width * 1.5,
                color=COLORS["restic"],
                label="restic",
                yerr=[[restic["mb_s"] - restic["mb_s_min"]], [restic["mb_s_max"] - restic["mb_s"]]],
                capsize=2,
            )
            ax.text(
                i, restic["mb_s"], f"{restic['mb_s']:.0f}", ha="center", va="bottom", fontsize=7
            )
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel("MB/s of source data (median, min–max)")
        info = result["datasets"][ds]
        title = f"{ds} ({info['bytes'] / MiB:.0f} MiB), {prof}"
        if prof == "wan":
            title += (
                f"\n{result['config']['delay_ms']:g} ms round trip, "
                f"{result['config']['rate']}/s per connection"
            )
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"duplicity full backup, --no-encryption ({result['started']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.duplicity_bench",
        description="duplicity full backups: fastxfer-duplicity vs stock duplicity vs restic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        choices=["tiny", "small", "large", "both"],
        default="small",
        help="both = small (every volsize and profile) + large (--large-profiles, "
        "--large-volsizes)",
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--volsizes", default="16,50", help="duplicity --volsize values (MiB)")
    p.add_argument("--profiles", default="loopback,wan")
    p.add_argument("--large-profiles", default="loopback")
    p.add_argument("--large-volsizes", default="50")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="from: " + ",".join(VARIANTS))
    p.add_argument(
        "--extra-fastxfer",
        action="append",
        default=[],
        metavar="NAME:VAR=VAL[,..]",
        help="another fastxfer row with these environment values, e.g. "
        "sv16:FASTXFER_SPOOL_VOLUMES=16",
    )
    p.add_argument("--delay-ms", type=float, default=40.0)
    p.add_argument("--rate", default="8MB", help="per connection and direction")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per tool run")
    p.add_argument(
        "--max-load",
        type=float,
        default=1.5,
        help="wait before starting until the 1-min load is at most this",
    )
    p.add_argument(
        "--max-load-wait", type=float, default=1200.0, help="seconds, polling every 30 s"
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=20.0,
        help="before each run wait up to S s until other processes use <= --idle-cores",
    )
    p.add_argument("--idle-cores", type=float, default=0.3)
    p.add_argument(
        "--redo-noisy",
        type=float,
        default=0.0,
        metavar="F",
        help="run again (up to --redo-max times) a run during which other processes used "
        "more than F cores on average (noise CPU-s > F x wall s); the discarded runs are kept "
        "in the JSON; 0: never",
    )
    p.add_argument("--redo-max", type=int, default=2)
    p.add_argument(
        "--cache-dir",
        default=None,
        help="data set cache (default: /dev/shm/fastxfer-dupbench-cache if it fits)",
    )
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--no-latest", action="store_true", help="do not write duplicity-latest.*")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument(
        "--fastxfer-rev",
        default=None,
        metavar="REV",
        help="benchmark fastxfer as committed at REV (git archive into the workdir, "
        "first on PYTHONPATH for every tool, the shaper and this process) instead of "
        "the work tree: for a shared tree that others are editing",
    )
    p.add_argument("--note", action="append", default=[], help="a note for the result file")
    p.add_argument(
        "--render",
        default=None,
        metavar="JSON",
        help="only rewrite the .md/.png of a result JSON; with A.json,B.json,... write one "
        "combined result (per data set and profile, the last file that has it wins); and "
        "duplicity-latest.* unless --no-latest",
    )
    return p


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _tool_versions() -> dict[str, str | None]:
    def first_line(argv: list[str]) -> str | None:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return None
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else None

    return {
        "duplicity": first_line([str(VENV_BIN / "duplicity"), "--version"]),
        "restic": first_line(["restic", "version"]),
    }


def snapshot_fastxfer(rev: str, dest: Path) -> dict[str, Any]:
    """``git archive REV fastxfer`` into ``dest``; put it first on the import path of this
    process and (PYTHONPATH) of every child.  Must run before anything imports fastxfer."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest.mkdir(parents=True)
    tar = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "fastxfer"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    if "fastxfer" in sys.modules:
        raise RuntimeError("fastxfer was imported before the snapshot")
    sys.path.insert(0, str(dest))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(dest), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return {"rev": rev, "commit": commit, "path": str(dest)}


def pick_cache_root(arg: str | None, need: int) -> Path:
    if arg:
        return Path(arg)
    shm = Path("/dev/shm")
    if shm.is_dir():
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > need:
            return shm / "fastxfer-dupbench-cache"
    return Path(tempfile.gettempdir()) / "fastxfer-dupbench-cache"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    out_dir = Path(args.results_dir)
    if args.render:
        paths = [Path(p) for p in args.render.split(",") if p]
        old = combine(paths)  # also recomputes the medians of a single file
        old["notes"] = [*old["notes"], *args.note]
        if len(paths) == 1:
            stem = paths[0].with_suffix("")
        else:
            now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            stem = out_dir / f"duplicity-{now}"
            Path(f"{stem}.json").write_text(json.dumps(old, indent=1, default=str))
        Path(f"{stem}.md").write_text(render_md(old))
        render_png(old, Path(f"{stem}.png"))
        log(f"wrote {stem}.md, .png" + (", .json" if len(paths) > 1 else ""))
        if not args.no_latest:
            shutil.copyfile(f"{stem}.md", out_dir / "duplicity-latest.md")
            if Path(f"{stem}.png").exists():
                shutil.copyfile(f"{stem}.png", out_dir / "duplicity-latest.png")
        return 0
    try:
        names = [n for n in args.variants.split(",") if n]
        variants = [VARIANTS[n] for n in names] + parse_extra_fastxfer(args.extra_fastxfer)
    except KeyError as exc:
        print(f"unknown variant {exc}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if shutil.which("restic") is None and any(v.tool == "restic" for v in variants):
        print("restic is not installed (apt-get install -y restic)", file=sys.stderr)
        return 2
    # (dataset, profile, volsizes) groups, in order.
    plan: list[tuple[str, str, list[int]]] = []
    ds_names = ["small", "large"] if args.dataset == "both" else [args.dataset]
    for ds in ds_names:
        profiles = (
            args.large_profiles if (ds == "large" and args.dataset == "both") else args.profiles
        )
        volsizes = (
            args.large_volsizes if (ds == "large" and args.dataset == "both") else args.volsizes
        )
        for prof in [p for p in profiles.split(",") if p]:
            if prof not in ("loopback", "wan"):
                print(f"unknown profile {prof}", file=sys.stderr)
                return 2
            plan.append((ds, prof, _csv_ints(volsizes)))

    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamp = started.replace("-", "").replace(":", "")
    biggest = max(DATASETS[d].total for d in ds_names)
    cache_root = pick_cache_root(
        args.cache_dir, sum(DATASETS[d].total for d in ds_names) + 4 * biggest
    )
    cache_root.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    for ds in ds_names:
        sources[ds], datasets[ds] = dataset_dir(DATASETS[ds], cache_root)
        datasets[ds]["path"] = str(sources[ds])

    wbase = (
        Path("/dev/shm") if cache_root.is_relative_to("/dev/shm") else Path(tempfile.gettempdir())
    )
    workdir = Path(tempfile.mkdtemp(prefix="fastxfer-dupbench-", dir=wbase))
    (workdir / "logs").mkdir()
    fx_source: dict[str, Any] = {"rev": None, "path": str(REPO / "fastxfer"), "note": "work tree"}
    if args.fastxfer_rev:
        fx_source = snapshot_fastxfer(args.fastxfer_rev, workdir / "fastxfer-src")
    from benchmarks.sysinfo import machine_info

    machine = machine_info()
    machine.update(_tool_versions())
    probe = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import fastxfer.duplicity.cli as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(workdir),
    )
    fx_source["imported_by_tools"] = (probe.stdout or probe.stderr).strip().splitlines()[-1:]
    if probe.returncode != 0:
        print(f"fastxfer.duplicity does not import: {probe.stderr.strip()[-500:]}", file=sys.stderr)
        return 2
    log(f"fastxfer for the tools: {fx_source}")
    aws_config = workdir / "aws-config"
    aws_config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    (workdir / "no-credentials").write_text("")
    log(f"workdir {workdir}; plan: {plan}; variants: {[v.name for v in variants]}")

    # SIGTERM (kill PID) stops like Ctrl-C: what was measured is still written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    quiet = wait_for_quiet(args.max_load, args.max_load_wait)
    log(f"load {quiet['load_go']}: starting")
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    interrupted = False
    with start_server(workdir) as server:
        ctx = Ctx(
            args, workdir, server, aws_config, fx_source["path"] if fx_source["rev"] else None
        )
        try:
            for ds, prof, volsizes in plan:
                rows = rows_for(variants, volsizes, prof)
                log(f"== {ds} / {prof}: {len(rows)} rows x {args.runs} runs")
                records += run_group(ctx, ds, sources[ds], prof, rows)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: writing what was measured")
        failures = ctx.failures
    summary = summarize(records, datasets)
    rat = ratios(summary)
    result: dict[str, Any] = {
        "kind": "duplicity-bench",
        "started": started,
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": ["python", "-m", "benchmarks.duplicity_bench", *argv],
        "config": {
            "runs": args.runs,
            "plan": plan,
            "delay_ms": args.delay_ms,
            "rate": args.rate,
            "max_load": args.max_load,
            "wait_idle": args.wait_idle,
            "idle_cores": args.idle_cores,
            "redo_noisy": args.redo_noisy,
            "redo_max": args.redo_max,
            "pause": args.pause,
            "wan_profiles_used": any(p == "wan" for _, p, _ in plan),
            "variant_summaries": {v.name: v.summary for v in variants},
            "variant_env": {v.name: dict(v.env) for v in variants if v.env},
        },
        "machine": machine,
        "fastxfer_source": fx_source,
        "datasets": datasets,
        "quiet": quiet,
        "load_end": loadavg(),
        "noise_max": max((r.get("noise_cpu_s") or 0 for r in records), default=0),
        "records": records,
        "summary": summary,
        "ratios": rat,
        "checks": checks(rat),
        "failures": failures,
        "interrupted": interrupted,
        "notes": args.note,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"duplicity-{stamp}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    md = render_md(result)
    Path(f"{stem}.md").write_text(md)
    png = render_png(result, Path(f"{stem}.png"))
    if not args.no_latest:
        (out_dir / "duplicity-latest.md").write_text(md)
        if png:
            shutil.copyfile(f"{stem}.png", out_dir / "duplicity-latest.png")
    log(f"wrote {stem}.json, .md{', .png' if png else ''}")
    print(md)
    if failures or args.keep_workdir:
        log(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
