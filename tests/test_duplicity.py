"""fastxfer-duplicity end to end: real duplicity 3.2.1 in a subprocess, real servers.

Needs duplicity installed beside fastxfer (``pip install --no-deps duplicity==3.2.1
fasteners``) and gpg; skipped otherwise.  Every run passes ``--archive-dir`` and
``--name``; runs are 1 s apart (duplicity's timestamps have 1 s resolution).
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from fastxfer.coldserver import RealisticMotoServer
from fastxfer.localserver import LocalS3Server

SCRIPT = os.path.join(os.path.dirname(sys.executable), "fastxfer-duplicity")


def _missing() -> str | None:
    try:
        import duplicity  # noqa: F401
    except ImportError:
        return "duplicity 3.2.1 is not installed (pip install --no-deps duplicity==3.2.1 fasteners)"
    if shutil.which("gpg") is None:
        return "gpg is not installed (duplicity runs it at start; apt-get install gnupg)"
    if not os.path.exists(SCRIPT):
        return "fastxfer-duplicity is not installed (pip install -e .)"
    return None


# scripts/dev.sh test installs all three; CI must never skip these silently.
if (_why := _missing()) is not None:
    if os.environ.get("CI"):
        raise RuntimeError(f"CI: {_why}")
    pytest.skip(_why, allow_module_level=True)

MiB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------


@dataclass
class Dup:
    """Runs fastxfer-duplicity against one bucket with one environment."""

    endpoint: str
    bucket: str
    env: dict[str, str]
    tmp: str
    prefix: str = "backups/host"
    runs: int = 0

    @property
    def url(self) -> str:
        return f"fastxfer+s3://{self.bucket}/{self.prefix}"

    def run(
        self,
        *args: str,
        check: bool = True,
        endpoint: str | None = None,
        timeout: float = 120,
        pause: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        if self.runs and pause:
            time.sleep(1.05)  # duplicity's timestamps have 1 s resolution
        self.runs += 1
        r = subprocess.run(
            [SCRIPT, *args, "--s3-endpoint-url", endpoint or self.endpoint],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and r.returncode != 0:
            pytest.fail(f"fastxfer-duplicity {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
        return r

    def start(self, *args: str, endpoint: str | None = None) -> subprocess.Popen[str]:
        if self.runs:
            time.sleep(1.05)
        self.runs += 1
        return subprocess.Popen(
            [SCRIPT, *args, "--s3-endpoint-url", endpoint or self.endpoint],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def leftovers(self) -> list[str]:
        """What fastxfer or duplicity left in the temp root (must be nothing)."""
        return sorted(os.listdir(self.tmp))


def make_tree(root: str, seed: int = 0) -> None:
    """Random (incompressible) and compressible files, nesting, a symlink, an empty dir."""
    rnd = __import__("random").Random(seed)
    os.makedirs(os.path.join(root, "docs", "deep", "er"), exist_ok=True)
    os.makedirs(os.path.join(root, "empty"), exist_ok=True)
    with open(os.path.join(root, "random.bin"), "wb") as f:
        f.write(rnd.randbytes(int(2.5 * MiB)))
    with open(os.path.join(root, "docs", "log.txt"), "w") as f:
        f.writelines(f"line {i} {rnd.random()}\n" for i in range(40_000))
    for i in range(20):
        with open(os.path.join(root, "docs", "deep", f"small{i}.txt"), "w") as f:
            f.write(f"small file {i}\n" * (i + 1))
    with open(os.path.join(root, "docs", "deep", "er", "odd name ü.txt"), "w") as f:
        f.write("unicode\n")
    os.symlink("docs/log.txt", os.path.join(root, "link"))
    os.chmod(os.path.join(root, "docs", "deep", "small3.txt"), 0o600)


def tree(root: str) -> dict[str, tuple[Any, ...]]:
    """Path -> what it is (file content hash and mode, symlink target, dir)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", digest, stat.S_IMODE(st.st_mode))
    return out


def keys(s3: Any, bucket: str) -> dict[str, str]:
    """Every key in the bucket -> its storage class."""
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o.get("StorageClass", "STANDARD") for o in page.get("Contents", [])})
    return out


def incomplete_uploads(s3: Any, bucket: str) -> list[Any]:
    try:
        uploads: list[Any] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except s3.exceptions.NoSuchUpload:
        return []  # rclone's answer to an empty listing after an abort
    return uploads


VOLUME = re.compile(r"\.vol\d+\.difftar")
MANIFEST = re.compile(r"\.manifest")


class S3Proxy:
    """HTTP proxy in front of an S3 server that delays or fails chosen requests and
    records how many volume uploads were in flight at once."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fail: Callable[[str, str], bool] = lambda method, path: False
        self.delay: Callable[[str, str], float] = lambda method, path: 0.0
        self.requests: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.part_seen = threading.Event()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                method, path = self.command, self.path
                volume_upload = method in ("PUT", "POST") and bool(VOLUME.search(path))
                with proxy._lock:
                    proxy.requests[method] += 1
                    if volume_upload and method == "PUT":
                        proxy.in_flight += 1
                        proxy.peak_in_flight = max(proxy.peak_in_flight, proxy.in_flight)
                try:
                    if method == "PUT" and "partNumber=" in path:
                        proxy.part_seen.set()
                    pause = proxy.delay(method, path)
                    if pause:
                        time.sleep(pause)
                    if proxy.fail(method, path):
                        payload = (
                            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied'
                            b"</Code><Message>injected by the test</Message></Error>"
                        )
                        self.send_response(403)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    conn = http.client.HTTPConnection(*proxy.target, timeout=60)
                    try:
                        headers = {
                            k: v for k, v in self.headers.items() if k.lower() != "connection"
                        }
                        conn.request(method, path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        self.send_response(resp.status, resp.reason)
                        for k, v in resp.getheaders():
                            if k.lower() not in (
                                "connection",
                                "transfer-encoding",
                                "content-length",
                            ):
                                self.send_header(k, v)
                        if method == "HEAD":
                            self.send_header(
                                "Content-Length", resp.getheader("Content-Length", "0")
                            )
                        else:
                            self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        if method != "HEAD":
                            self.wfile.write(data)
                    finally:
                        conn.close()
                finally:
                    if volume_upload and method == "PUT":
                        with proxy._lock:
                            proxy.in_flight -= 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def tmp_root(work_dir: str) -> str:
    """duplicity's and fastxfer's temp root (TMPDIR), to prove nothing is left in it."""
    path = os.path.join(work_dir, "tmp")
    os.makedirs(path)
    return path


@pytest.fixture
def base_env(work_dir: str, tmp_root: str) -> Iterator[dict[str, str]]:
    gnupg = os.path.join(work_dir, "gnupg")
    os.makedirs(gnupg, mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTXFER_", "AWS_", "PYTEST"))}
    env.update(
        TMPDIR=tmp_root,
        GNUPGHOME=gnupg,
        FASTXFER_RESTORE_STATE=os.path.join(work_dir, "restore-state.sqlite"),
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )
    yield env
    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"],
        env={**os.environ, "GNUPGHOME": gnupg},
        capture_output=True,
        check=False,
    )


@pytest.fixture
def dup(rclone_server: LocalS3Server, bucket: str, base_env: dict[str, str], tmp_root: str) -> Dup:
    env = dict(
        base_env,
        AWS_ACCESS_KEY_ID=rclone_server.access_key,
        AWS_SECRET_ACCESS_KEY=rclone_server.secret_key,
    )
    return Dup(rclone_server.endpoint_url, bucket, env, tmp_root)


@pytest.fixture
def source(work_dir: str) -> str:
    path = os.path.join(work_dir, "src")
    make_tree(path)
    return path


@pytest.fixture
def proxy(rclone_server: LocalS3Server) -> Iterator[S3Proxy]:
    with S3Proxy(rclone_server.endpoint_url) as p:
        yield p


# -- rclone serve s3 ------------------------------------------------------------------


def test_backup_cycle_without_encryption(
    dup: Dup, source: str, work_dir: str, s3: Any, proxy: S3Proxy
) -> None:
    """full, incremental, collection-status, list-current-files, verify, restore (whole and
    one path, with and without the cache), remove-all-but-n-full, cleanup."""
    cache = os.path.join(work_dir, "cache")
    common = ["--no-encryption", "--archive-dir", cache, "--name", "t"]
    # Slow volume uploads through the proxy: several must be in flight at once.
    proxy.delay = lambda method, path: 0.3 if method == "PUT" and VOLUME.search(path) else 0.0
    full = dup.run(
        "full",
        *common,
        "--volsize",
        "1",
        "-v",
        "info",
        source,
        dup.url,
        endpoint=proxy.endpoint_url,
    )
    assert "Errors 0" in full.stdout
    assert 1 < proxy.peak_in_flight <= 8  # FASTXFER_SPOOL_VOLUMES default
    remote = keys(s3, dup.bucket)
    volumes = [k for k in remote if VOLUME.search(k)]
    assert len(volumes) >= 3
    assert all(k.startswith("backups/host/duplicity-full") for k in remote)
    assert sum(1 for k in remote if MANIFEST.search(k)) == 1
    assert re.search(r"fastxfer: \d+ volume\(s\) uploaded, up to [2-8] at once", full.stdout)

    # Change the source: modify, add, remove.
    with open(os.path.join(source, "docs", "log.txt"), "a") as f:
        f.write("appended\n")
    with open(os.path.join(source, "new.txt"), "w") as f:
        f.write("new file\n")
    os.unlink(os.path.join(source, "docs", "deep", "small0.txt"))
    dup.run("incremental", *common, "--volsize", "1", source, dup.url)

    status = dup.run("collection-status", *common, dup.url).stdout
    assert "Number of contained backup sets: 2" in status
    listing = dup.run("list-current-files", *common, dup.url).stdout
    assert "new.txt" in listing
    assert "docs/deep/small0.txt" not in listing
    dup.run("verify", *common, dup.url, source)

    restored = os.path.join(work_dir, "restored")
    dup.run("restore", *common, dup.url, restored)
    assert tree(restored) == tree(source)

    one = os.path.join(work_dir, "one.txt")
    dup.run("restore", *common, "--path-to-restore", "docs/log.txt", dup.url, one)
    with open(one, "rb") as a, open(os.path.join(source, "docs", "log.txt"), "rb") as b:
        assert a.read() == b.read()

    # Without the local cache: metadata comes from the server first.
    nocache = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache2"), "--name", "t"]
    restored2 = os.path.join(work_dir, "restored2")
    r = dup.run("restore", *nocache, "-v", "info", dup.url, restored2)
    assert "Copying duplicity-full" in r.stdout
    assert tree(restored2) == tree(source)
    # ...and an incremental without a cache (a third cache dir).
    with open(os.path.join(source, "new2.txt"), "w") as f:
        f.write("another\n")
    nocache3 = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache3"), "--name", "t"]
    dup.run("incremental", *nocache3, source, dup.url)
    dup.run("verify", *nocache3, dup.url, source)

    # A second chain, then keep only it.
    dup.run("full", *common, "--volsize", "1", source, dup.url)
    before = keys(s3, dup.bucket)
    dup.run("remove-all-but-n-full", "1", "--force", *common, dup.url)
    after = keys(s3, dup.bucket)
    fulls = {re.sub(r".*duplicity-full\.(\w+)\..*", r"\1", k) for k in after if "-full." in k}
    assert len(fulls) == 1
    assert not any("duplicity-inc." in k or "new-signatures" in k for k in after)
    assert set(after) < set(before)
    dup.run("cleanup", "--force", *common, dup.url)
    restored3 = os.path.join(work_dir, "restored3")
    dup.run("restore", *common, dup.url, restored3)
    assert tree(restored3) == tree(source)
    assert dup.leftovers() == []
    assert incomplete_uploads(s3, dup.bucket) == []


def test_symmetric_encryption(dup: Dup, source: str, work_dir: str, s3: Any) -> None:
    dup.env["PASSPHRASE"] = "correct horse battery staple"
    cache = os.path.join(work_dir, "cache")
    common = ["--archive-dir", cache, "--name", "enc"]
    dup.run("full", *common, "--volsize", "1", source, dup.url)
    remote = keys(s3, dup.bucket)
    assert remote
    assert all(k.endswith(".gpg") for k in remote)
    with open(os.path.join(source, "added.txt"), "w") as f:
        f.write("added\n")
    dup.run("incremental", *common, "--volsize", "1", source, dup.url)
    dup.run("verify", *common, dup.url, source)
    restored = os.path.join(work_dir, "restored")
    nocache = ["--archive-dir", os.path.join(work_dir, "cache2"), "--name", "enc"]
    dup.run("restore", *nocache, dup.url, restored)
    assert tree(restored) == tree(source)
    dup.env["PASSPHRASE"] = "wrong"
    bad = dup.run("restore", *nocache, dup.url, os.path.join(work_dir, "nope"), check=False)
    assert bad.returncode != 0
    assert dup.leftovers() == []


def test_failed_volume_upload_leaves_no_manifest(
    dup: Dup, source: str, work_dir: str, s3: Any, proxy: S3Proxy
) -> None:
    """A volume the server refuses: non-zero exit, no manifest; the next run resumes."""
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache"), "--name", "f"]
    proxy.fail = lambda method, path: method == "PUT" and ".vol3.difftar" in path
    r = dup.run(
        "full", *common, "--volsize", "1", source, dup.url, endpoint=proxy.endpoint_url, check=False
    )
    assert r.returncode != 0
    assert "FatalBackendException" in r.stdout + r.stderr
    assert "vol3" in r.stdout + r.stderr
    remote = keys(s3, dup.bucket)
    assert any(".vol1." in k for k in remote)
    assert not any(MANIFEST.search(k) for k in remote), remote
    assert not any("signatures" in k for k in remote), remote
    assert dup.leftovers() == []

    proxy.fail = lambda method, path: False
    r = dup.run("full", *common, "--volsize", "1", source, dup.url, endpoint=proxy.endpoint_url)
    assert "Restarting backup at volume 2" in r.stdout
    assert "Errors 0" in r.stdout
    restored = os.path.join(work_dir, "restored")
    dup.run("restore", *common, dup.url, restored)
    assert tree(restored) == tree(source)
    assert dup.leftovers() == []


def test_failure_reaches_the_barrier_even_with_retries(
    dup: Dup, source: str, work_dir: str, s3: Any, proxy: S3Proxy
) -> None:
    """The data-loss trap: the LAST volume fails, so the signature upload is the first to
    hear of it.  That must stop the run: no retry of the signature may let the manifest
    through."""
    # How many volumes this source makes at --volsize 1 (a first backup elsewhere).
    probe = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "c0"), "--name", "p"]
    dup.run("full", *probe, "--volsize", "1", source, f"fastxfer+s3://{dup.bucket}/probe")
    last = max(
        int(m.group(1)) for k in keys(s3, dup.bucket) if (m := re.search(r"\.vol(\d+)\.", k))
    )
    assert last >= 3

    def last_volume(method: str, path: str) -> bool:
        return method == "PUT" and f".vol{last}.difftar" in path

    proxy.delay = lambda method, path: 0.5 if last_volume(method, path) else 0.0
    proxy.fail = last_volume
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "c1"), "--name", "b"]
    r = dup.run(
        "full",
        *common,
        "--volsize",
        "1",
        "--num-retries",
        "2",
        source,
        dup.url,
        endpoint=proxy.endpoint_url,
        check=False,
    )
    assert r.returncode != 0, r.stdout
    assert f"vol{last}" in r.stdout + r.stderr
    remote = [k for k in keys(s3, dup.bucket) if k.startswith(dup.prefix + "/")]
    assert not any(MANIFEST.search(k) for k in remote), remote
    assert not any("signatures" in k for k in remote), remote
    assert dup.leftovers() == []


def _slow_multipart_env(dup: Dup) -> None:
    # 6 MB volumes in two parts of 5 MiB + 1 MiB, so a multipart upload is open.
    dup.env.update(FASTXFER_MULTIPART_THRESHOLD="5MiB", FASTXFER_PART_SIZE="5MiB")


def _big_source(work_dir: str) -> str:
    path = os.path.join(work_dir, "bigsrc")
    os.makedirs(path)
    with open(os.path.join(path, "big.bin"), "wb") as f:
        f.write(os.urandom(14 * MiB))
    return path


def test_ctrl_c_leaves_no_spool_and_no_multipart_upload(
    dup: Dup, work_dir: str, s3: Any, proxy: S3Proxy
) -> None:
    src = _big_source(work_dir)
    _slow_multipart_env(dup)
    proxy.delay = lambda method, path: 3.0 if method == "PUT" and "partNumber=" in path else 0.0
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache"), "--name", "c"]
    p = dup.start("full", *common, "--volsize", "6", src, dup.url, endpoint=proxy.endpoint_url)
    try:
        assert proxy.part_seen.wait(30), "no part upload started"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 4, (out, err)  # duplicity's exit status after SIGINT (EINTR)
    assert "Traceback" not in err
    assert dup.leftovers() == []
    time.sleep(3.5)  # let the proxy's delayed part requests finish (they find no upload)
    assert incomplete_uploads(s3, dup.bucket) == []
    assert not any(MANIFEST.search(k) for k in keys(s3, dup.bucket))

    proxy.delay = lambda method, path: 0.0
    dup.run("full", *common, "--volsize", "6", src, dup.url, endpoint=proxy.endpoint_url)
    restored = os.path.join(work_dir, "restored")
    dup.run("restore", *common, dup.url, restored)
    assert tree(restored) == tree(src)


def test_kill_9_then_rerun(dup: Dup, work_dir: str, s3: Any, proxy: S3Proxy) -> None:
    src = _big_source(work_dir)
    _slow_multipart_env(dup)
    proxy.delay = lambda method, path: 2.0 if method == "PUT" and "partNumber=" in path else 0.0
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache"), "--name", "k"]
    p = dup.start("full", *common, "--volsize", "6", src, dup.url, endpoint=proxy.endpoint_url)
    try:
        assert proxy.part_seen.wait(30), "no part upload started"
        time.sleep(0.2)
        p.kill()
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    time.sleep(2.5)  # the delayed part requests reach the server
    assert incomplete_uploads(s3, dup.bucket) != []  # what a killed run leaves
    assert any(e.startswith("fastxfer-spool-") for e in dup.leftovers())

    proxy.delay = lambda method, path: 0.0
    r = dup.run("full", *common, "--volsize", "6", src, dup.url, endpoint=proxy.endpoint_url)
    assert "Errors 0" in r.stdout
    assert "aborted incomplete multipart uploads" in r.stdout
    assert incomplete_uploads(s3, dup.bucket) == []
    assert not any(e.startswith("fastxfer-spool-") for e in dup.leftovers())
    restored = os.path.join(work_dir, "restored")
    dup.run(
        "restore",
        "--no-encryption",
        "--archive-dir",
        os.path.join(work_dir, "c2"),
        "--name",
        "k",
        dup.url,
        restored,
    )
    assert tree(restored) == tree(src)


def test_refused_option_and_bad_environment(dup: Dup, source: str, work_dir: str, s3: Any) -> None:
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache"), "--name", "x"]
    for flag in (["--concurrency", "4"], ["--concurrency=2"], ["--conc", "2"]):
        r = dup.run("full", *common, *flag, source, dup.url, check=False, pause=False)
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1
        assert "--conc" in r.stderr
        assert "not supported" in r.stderr
    for name, value in (
        ("FASTXFER_CONCURRENCY", "zero"),
        ("FASTXFER_SPOOL_VOLUMES", "0"),
        ("FASTXFER_SPOOL_SIZE", "lots"),
        ("FASTXFER_RESTORE_TIER", "fast"),
        ("FASTXFER_RESTORE_DAYS", "-1"),
        ("FASTXFER_POLL_INTERVAL", "soon"),
        ("FASTXFER_BWLIMIT", "fast"),
    ):
        env = dict(dup.env)
        dup.env[name] = value
        try:
            r = dup.run("full", *common, source, dup.url, check=False, pause=False)
        finally:
            dup.env = env
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.startswith(f"fastxfer-duplicity: error: {name}")
        assert r.stderr.count("\n") == 1, r.stderr
    assert keys(s3, dup.bucket) == {}


def test_missing_bucket_is_fatal_at_once(dup: Dup, source: str, work_dir: str) -> None:
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache"), "--name", "m"]
    started = time.monotonic()
    r = dup.run("full", *common, source, "fastxfer+s3://no-such-bucket-fx/x", check=False)
    assert r.returncode != 0
    assert "no-such-bucket-fx" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 20  # not five retries 30 s apart


@pytest.mark.parametrize("cause", ["no-such-profile", "malformed-aws-config"])
def test_engine_that_cannot_start_is_fatal_at_once(
    dup: Dup, source: str, work_dir: str, s3: Any, cause: str
) -> None:
    """The engine starts in the background while duplicity gets going; a start
    that fails (a profile that does not exist: fastxfer's error; a malformed AWS
    config file: botocore's own) stops the first backend call for good instead
    of being retried, and nothing is uploaded."""
    common = ["--no-encryption", "--archive-dir", os.path.join(work_dir, "cache"), "--name", "p"]
    env = dict(dup.env)
    if cause == "no-such-profile":
        dup.env["AWS_PROFILE"] = "fastxfer-no-such-profile"
        named = "fastxfer-no-such-profile"
    else:
        bad = os.path.join(work_dir, "aws-config")
        with open(bad, "w") as f:
            f.write("[default\nregion = us-east-1\n")
        dup.env["AWS_CONFIG_FILE"] = bad
        named = bad
    try:
        started = time.monotonic()
        r = dup.run("full", *common, source, dup.url, check=False, pause=False)
    finally:
        dup.env = env
    assert r.returncode != 0
    assert named in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 20  # not five retries 30 s apart
    assert keys(s3, dup.bucket) == {}


# -- the realistic moto server: storage classes and thawing ---------------------------


@pytest.fixture
def moto_dup(
    moto_server: RealisticMotoServer, moto_bucket: str, base_env: dict[str, str], tmp_root: str
) -> Dup:
    env = dict(
        base_env,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        FASTXFER_POLL_INTERVAL="0.3s",
    )
    return Dup(moto_server.endpoint_url, moto_bucket, env, tmp_root, prefix="dup")


def test_deep_archive_backup_and_batch_thaw(
    moto_dup: Dup, moto_server: RealisticMotoServer, moto_s3: Any, source: str, work_dir: str
) -> None:
    dup = moto_dup
    # Volumes in their own folder (for lifecycle rules); names with prefixes still
    # classify right: volumes cold, the rest STANDARD.
    common = [
        "--no-encryption",
        "--name",
        "cold",
        "--file-prefix-archive",
        "archive/",
        "--file-prefix-manifest",
        "man-",
        "--file-prefix-signature",
        "sig-",
    ]
    dup.run(
        "full",
        *common,
        "--archive-dir",
        os.path.join(work_dir, "c1"),
        "--s3-use-deep-archive",
        "--volsize",
        "1",
        source,
        dup.url,
    )
    remote = keys(moto_s3, dup.bucket)
    volumes = {k: c for k, c in remote.items() if VOLUME.search(k)}
    others = {k: c for k, c in remote.items() if not VOLUME.search(k)}
    assert len(volumes) >= 3
    assert set(volumes.values()) == {"DEEP_ARCHIVE"}
    assert set(others.values()) == {"STANDARD"}
    assert all(k.startswith("dup/archive/duplicity-full.") for k in volumes)
    assert any(MANIFEST.search(k) and k.startswith("dup/man-") for k in others)
    assert any("signatures" in k and k.startswith("dup/sig-") for k in others)

    # Restore with an empty cache: one batch, one RestoreObject per volume.
    moto_server.reset_counts()
    restored = os.path.join(work_dir, "restored")
    r = dup.run(
        "restore", *common, "--archive-dir", os.path.join(work_dir, "c2"), dup.url, restored
    )
    assert tree(restored) == tree(source)
    assert f"restoring {len(volumes)} archived file(s) in one batch" in r.stdout
    assert "price:" in r.stdout
    by_key = moto_server.counts_by_key()
    restores = {k: c.get("RestoreObject", 0) for (b, k), c in by_key.items() if b == dup.bucket}
    assert {k: n for k, n in restores.items() if n} == dict.fromkeys(volumes, 1)
    # Every RestoreObject went out before the first volume was read.
    events = moto_server.events()
    restore_times = [e.time for e in events if e.op == "RestoreObject"]
    volume_gets = [e.time for e in events if e.op == "GetObject" and VOLUME.search(e.key)]
    assert max(restore_times) < min(volume_gets)
    assert not [e for e in events if e.op == "GetObject" and e.status != 200]  # none read cold

    # Again: the copies are restored already, nothing is requested.
    moto_server.reset_counts()
    restored2 = os.path.join(work_dir, "restored2")
    dup.run("restore", *common, "--archive-dir", os.path.join(work_dir, "c3"), dup.url, restored2)
    assert tree(restored2) == tree(source)
    assert moto_server.counts().get("RestoreObject", 0) == 0

    # An incremental with the cache reads only STANDARD files.
    with open(os.path.join(source, "more.txt"), "w") as f:
        f.write("more\n")
    dup.run(
        "incremental",
        *common,
        "--archive-dir",
        os.path.join(work_dir, "c1"),
        "--s3-use-deep-archive",
        "--volsize",
        "1",
        source,
        dup.url,
    )
    assert dup.leftovers() == []


def test_thawing_shows_an_eta_on_a_terminal(
    moto_dup: Dup, moto_server: RealisticMotoServer, source: str, work_dir: str
) -> None:
    """A restore waiting for DEEP_ARCHIVE volumes says so on a terminal, with the time left."""
    import pty

    dup = moto_dup
    common = ["--no-encryption", "--name", "eta"]
    dup.run(
        "full",
        *common,
        "--archive-dir",
        os.path.join(work_dir, "c1"),
        "--s3-use-deep-archive",
        "--volsize",
        "1",
        source,
        dup.url,
    )
    moto_server.set_restore_delay(4.0)
    master, slave = pty.openpty()
    try:
        time.sleep(1.05)
        proc = subprocess.Popen(
            [
                SCRIPT,
                "restore",
                *common,
                "--archive-dir",
                os.path.join(work_dir, "c2"),
                dup.url,
                os.path.join(work_dir, "restored"),
                "--s3-endpoint-url",
                dup.endpoint,
            ],
            env=dup.env,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        seen = bytearray()
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer closed it
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(120) == 0, seen.decode(errors="replace")[-2000:]
    finally:
        os.close(master)
        moto_server.set_restore_delay(1.0)
    text = seen.decode(errors="replace")
    assert re.search(
        r"waiting for duplicity-full\.\S+\.vol\d+\.difftar\.gz to thaw, about \d", text
    ), text[-2000:]
    assert tree(os.path.join(work_dir, "restored")) == tree(source)


def test_archive_keep_full_then_restore_the_oldest_chain(
    moto_dup: Dup, moto_server: RealisticMotoServer, moto_s3: Any, source: str, work_dir: str
) -> None:
    """Issue #12: three full chains; `archive --keep-full 1` moves exactly the older
    chains' volumes with no GET of data; the oldest chain still restores, thawed in
    one batch; a full backup with FASTXFER_ARCHIVE_KEEP_FULL archives on its own."""
    from fastxfer.cli import main as fastxfer_main

    dup = moto_dup
    common = ["--no-encryption", "--name", "arch", "--volsize", "1"]
    trees = []
    for i in range(3):
        with open(os.path.join(source, "round.txt"), "w") as f:
            f.write(f"round {i}\n" * 1000)
        trees.append(tree(source))
        dup.run("full", *common, "--archive-dir", os.path.join(work_dir, "c"), source, dup.url)
    before = keys(moto_s3, dup.bucket)
    fulls = sorted({m[1] for k in before if (m := re.search(r"duplicity-full\.([^.]+)\.", k))})
    assert len(fulls) == 3
    oldest_volumes = {k for k in before if VOLUME.search(k) and fulls[0] in k}
    middle_volumes = {k for k in before if VOLUME.search(k) and fulls[1] in k}

    moto_server.reset_counts()
    env = dict(dup.env)
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FASTXFER_STATE"):
            if k in env:
                mp.setenv(k, env[k])
        mp.setenv("AWS_ENDPOINT_URL", dup.endpoint)
        url = f"s3://{dup.bucket}/{dup.prefix}/"
        assert fastxfer_main(["archive", url, "--keep-full", "1"]) == 0
    counts = moto_server.counts()
    assert counts.get("GetObject", 0) == 0  # nothing read
    after = keys(moto_s3, dup.bucket)
    archived = {k for k, c in after.items() if c == "DEEP_ARCHIVE"}
    assert archived == oldest_volumes | middle_volumes
    assert all(c == "STANDARD" for k, c in after.items() if not VOLUME.search(k))

    # collection-status with an empty cache still works (it reads no volume).
    r = dup.run(
        "collection-status", *common, "--archive-dir", os.path.join(work_dir, "e1"), dup.url
    )
    assert "Full" in r.stdout

    # The oldest chain restores end to end, thawed in one batch.
    moto_server.reset_counts()
    restored = os.path.join(work_dir, "restored-oldest")
    r = dup.run(
        "restore",
        *common,
        "--archive-dir",
        os.path.join(work_dir, "e2"),
        "--time",
        fulls[0],
        dup.url,
        restored,
    )
    assert tree(restored) == trees[0]
    restores = moto_server.counts().get("RestoreObject", 0)
    assert restores == len(oldest_volumes)

    # An incremental with an empty cache reads manifests and signatures only.
    with open(os.path.join(source, "incremental.txt"), "w") as f:
        f.write("new\n")
    dup.run("incremental", *common, "--archive-dir", os.path.join(work_dir, "e3"), source, dup.url)

    # FASTXFER_ARCHIVE_KEEP_FULL: a fourth full archives the third chain by itself.
    dup.env["FASTXFER_ARCHIVE_KEEP_FULL"] = "1"
    dup.run("full", *common, "--archive-dir", os.path.join(work_dir, "c"), source, dup.url)
    final = keys(moto_s3, dup.bucket)
    third = {k for k in final if VOLUME.search(k) and fulls[2] in k}
    assert third
    assert all(final[k] == "DEEP_ARCHIVE" for k in third)
    newest = {k for k in final if VOLUME.search(k) and not any(t in k for t in fulls)}
    assert newest
    assert all(final[k] == "STANDARD" for k in newest)


@pytest.mark.parametrize(
    ("flag", "storage_class"),
    [
        ("s3_use_glacier", "GLACIER"),
        ("s3_use_glacier_ir", "GLACIER_IR"),
        ("s3_use_deep_archive", "DEEP_ARCHIVE"),
        ("s3_use_ia", "STANDARD_IA"),
        ("s3_use_onezone_ia", "ONEZONE_IA"),
        ("s3_use_rrs", "REDUCED_REDUNDANCY"),
        (None, None),
    ],
)
def test_duplicity_s3_options_choose_the_volume_class(
    flag: str | None, storage_class: str | None
) -> None:
    import types

    from fastxfer.duplicity.backend import volume_number, volume_storage_class

    cfg = types.SimpleNamespace(**({flag: True} if flag else {}))
    assert volume_storage_class(cfg) == storage_class
    # Only data volumes take that class; everything else is a barrier file, STANDARD.
    assert volume_number(b"duplicity-full.20260101T000000Z.vol3.difftar.gpg") == 3
    for other in (
        b"duplicity-full.20260101T000000Z.manifest.gpg",
        b"duplicity-full-signatures.20260101T000000Z.sigtar.gpg",
        b"duplicity-inc.20260101T000000Z.to.20260102T000000Z.manifest",
        b"duplicity-new-signatures.20260101T000000Z.to.20260102T000000Z.sigtar.gz",
    ):
        assert volume_number(other) is None


def test_volumes_are_sent_in_about_sixteen_parts() -> None:
    """One part a volume would use one connection while duplicity makes the next."""
    from fastxfer.duplicity.backend import volume_part_size

    mib = 1024 * 1024
    assert volume_part_size(16 * mib) == 5 * mib  # S3's minimum part
    assert volume_part_size(50 * mib) == 5 * mib
    assert volume_part_size(200 * mib) == 13 * mib  # duplicity's default --volsize
    assert volume_part_size(1024 * mib) == 64 * mib
    assert volume_part_size(0) is None
