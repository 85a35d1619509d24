"""The command line's contract, table-driven, every row a real ``fastxfer`` process.

* Exit codes 0-8, 130 and 143 (README "exit codes"), each produced by a real run
  against a real server (rclone serve s3; the realistic moto server for what
  rclone cannot do: archived objects, keys a file system cannot hold).
* Bad input of every command and of the ``FASTXFER_*`` variables: a non-zero
  exit, exactly one line on stderr (no traceback), and the secret key nowhere
  in the output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_cli_signals import big_file, interrupt_upload  # noqa: F401 - a fixture too

from fastxfer.coldserver import RealisticMotoServer
from fastxfer.integrity import METADATA_KEY, to_b64
from fastxfer.localserver import LocalS3Server, free_port

WRONG_SECRET = "wrong-secret-0123456789abcdef0123456789"
"""A wrong secret key; no more to be printed than the right one."""

LONG_KEY = "k" * 1100


def isolated_env(state_dir: str, **values: str) -> dict[str, str]:
    """The environment without the user's AWS and fastxfer settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTXFER_"))}
    env.update(
        AWS_CONFIG_FILE=os.path.join(state_dir, "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(state_dir, "aws-credentials"),
        FASTXFER_STATE=os.path.join(state_dir, "state.sqlite"),
        XDG_CACHE_HOME=os.path.join(state_dir, "cache"),  # restore jobs' default state file
    )
    env.update(values)
    return env


def run(
    args: list[str], env: dict[str, str], *, unprivileged: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fastxfer.cli", *args]
    if unprivileged and os.geteuid() == 0:
        cmd = [sys.executable, "-c", DROP_DAC_AND_EXEC, *cmd[1:]]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


DROP_DAC_AND_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit("cannot drop CAP_DAC_OVERRIDE: " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""
"""Run the rest of argv as root without the right to ignore file permissions, so a
read-only directory is read-only (tests run as root in containers)."""


# -- exit codes -------------------------------------------------------------------


@dataclass
class Servers:
    rclone: LocalS3Server
    moto: RealisticMotoServer
    bucket: str
    moto_bucket: str
    s3: Any
    moto_s3: Any
    work: str
    big_file: str

    def on_rclone(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        values = {
            "AWS_ACCESS_KEY_ID": self.rclone.access_key,
            "AWS_SECRET_ACCESS_KEY": self.rclone.secret_key,
            "AWS_ENDPOINT_URL": self.rclone.endpoint_url,
            **env,
        }
        return run(list(args), isolated_env(self.work, **values))

    def on_moto(self, *args: str) -> subprocess.CompletedProcess[str]:
        values = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": self.moto.endpoint_url,
        }
        return run(list(args), isolated_env(self.work, **values))

    def small_file(self) -> str:
        path = os.path.join(self.work, "small.txt")
        with open(path, "w") as f:
            f.write("small")
        return path


def _ok(s: Servers) -> subprocess.CompletedProcess[str]:
    return s.on_rclone("cp", s.small_file(), f"s3://{s.bucket}/small.txt")


def _incomplete(s: Servers) -> subprocess.CompletedProcess[str]:
    for key in ("t/ok.txt", "t/a/../escape"):
        s.moto_s3.put_object(Bucket=s.moto_bucket, Key=key, Body=b"x")
    return s.on_moto("cp", "-r", f"s3://{s.moto_bucket}/t/", os.path.join(s.work, "t"))


def _usage(s: Servers) -> subprocess.CompletedProcess[str]:
    return s.on_rclone("cp", s.small_file(), "s3:/no-bucket")


def _local(s: Servers) -> subprocess.CompletedProcess[str]:
    return s.on_rclone("cp", os.path.join(s.work, "missing"), f"s3://{s.bucket}/k")


def _refused(s: Servers) -> subprocess.CompletedProcess[str]:
    return s.on_rclone("cp", s.small_file(), "s3://no-such-bucket-here/k")


def _credentials(s: Servers) -> subprocess.CompletedProcess[str]:
    return s.on_rclone("ls", f"s3://{s.bucket}/", AWS_SECRET_ACCESS_KEY=WRONG_SECRET)


def _unreachable(s: Servers) -> subprocess.CompletedProcess[str]:
    # (`ls` without a URL: one ListBuckets.  botocore retries a refused connection,
    # with back-off, for ~8 s here, a paginated LIST for ~24 s.)
    return s.on_rclone("ls", "--endpoint-url", f"http://127.0.0.1:{free_port()}")


def _cold(s: Servers) -> subprocess.CompletedProcess[str]:
    s.moto_s3.put_object(Bucket=s.moto_bucket, Key="cold", Body=b"ice", StorageClass="GLACIER")
    return s.on_moto("cp", f"s3://{s.moto_bucket}/cold", os.path.join(s.work, "cold"))


def _integrity(s: Servers) -> subprocess.CompletedProcess[str]:
    s.s3.put_object(
        Bucket=s.bucket, Key="damaged", Body=b"payload", Metadata={METADATA_KEY: to_b64(12345)}
    )
    r = s.on_rclone("cp", f"s3://{s.bucket}/damaged", os.path.join(s.work, "damaged"))
    assert not os.path.exists(os.path.join(s.work, "damaged"))  # discarded
    return r


def _signal(sig: signal.Signals) -> Callable[[Servers], subprocess.CompletedProcess[str]]:
    def interrupted(s: Servers) -> subprocess.CompletedProcess[str]:
        r = interrupt_upload(s.rclone, s.s3, s.bucket, s.big_file, s.work, (sig,))
        assert r.stderr.splitlines() == [f"fastxfer: interrupted ({sig.name})"]
        assert not s.s3.list_multipart_uploads(Bucket=s.bucket).get("Uploads")
        return r

    return interrupted


EXIT_CODES: list[tuple[int, Callable[[Servers], subprocess.CompletedProcess[str]]]] = [
    (0, _ok),
    (1, _incomplete),
    (2, _usage),
    (3, _local),
    (4, _refused),
    (5, _credentials),
    (6, _unreachable),
    (7, _cold),
    (8, _integrity),
    (130, _signal(signal.SIGINT)),
    (143, _signal(signal.SIGTERM)),
]


@pytest.mark.parametrize(
    ("code", "scenario"), EXIT_CODES, ids=[f"exit-{c}-{f.__name__}" for c, f in EXIT_CODES]
)
def test_exit_code_contract(
    code: int,
    scenario: Callable[[Servers], subprocess.CompletedProcess[str]],
    rclone_server: LocalS3Server,
    moto_server: RealisticMotoServer,
    bucket: str,
    moto_bucket: str,
    s3: Any,
    moto_s3: Any,
    work_dir: str,
    big_file: str,  # noqa: F811 - the fixture from test_cli_signals
) -> None:
    servers = Servers(
        rclone_server, moto_server, bucket, moto_bucket, s3, moto_s3, work_dir, big_file
    )
    r = scenario(servers)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    if code:
        assert r.stderr.splitlines()[0].startswith("fastxfer: "), r.stderr


# -- bad input: one line, non-zero, no secret -------------------------------------------


@dataclass
class Ctx:
    """What the bad-input cases are run with: one server, one bucket, some local things
    (made by the fixture), a port someone else listens on."""

    srv: LocalS3Server
    bucket: str
    root: str
    busy_port: int

    @property
    def file(self) -> str:
        return self.path("file.txt")

    @property
    def object_url(self) -> str:
        return f"s3://{self.bucket}/object.txt"

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)


@dataclass(frozen=True)
class Case:
    id: str
    code: int
    args: Callable[[Ctx], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    says: str = ""
    """A piece of the one line."""
    never: Callable[[Ctx], list[str]] = lambda c: []
    """Strings that must appear nowhere in the output (beyond the secrets)."""
    unprivileged: bool = False


def _dst(c: Ctx) -> str:
    return f"s3://{c.bucket}/k"


CASES: list[Case] = [
    # cp: arguments, URLs, keys
    Case("cp-no-args", 2, lambda c: ["cp"], says="required"),
    Case("no-command", 2, lambda c: [], says="required: command"),
    Case("unknown-option", 2, lambda c: ["cp", c.file, _dst(c), "--frobnicate"]),
    Case("cp-missing-file", 3, lambda c: ["cp", c.path("nope"), _dst(c)], says="no such file"),
    Case("cp-bad-url", 2, lambda c: ["cp", c.file, "s3:/nobucket"], says="malformed S3 URL"),
    Case("cp-url-no-bucket", 2, lambda c: ["cp", c.file, "s3:///k"], says="has no bucket"),
    Case("cp-bad-bucket-name", 2, lambda c: ["cp", c.file, "s3://Bad_Bucket/k"]),
    Case("cp-two-s3-urls", 2, lambda c: ["cp", _dst(c), _dst(c)], says="the same object"),
    Case("cp-two-local-paths", 2, lambda c: ["cp", c.file, c.path("x")], says="s3:// URL"),
    Case("cp-dir-without-r", 2, lambda c: ["cp", c.root, _dst(c)], says="--recursive"),
    Case("cp-prefix-without-r", 2, lambda c: ["cp", f"s3://{c.bucket}/p/", c.path("x")]),
    Case(
        "cp-key-too-long",
        2,
        lambda c: ["cp", c.file, f"s3://{c.bucket}/{LONG_KEY}"],
        says="1,100 bytes long",
        never=lambda c: [LONG_KEY[:200]],
    ),
    Case(
        "cp-download-key-too-long",
        2,
        lambda c: ["cp", f"s3://{c.bucket}/{LONG_KEY}", c.path("x")],
        says="at most 1,024",
        never=lambda c: [LONG_KEY[:200]],
    ),
    Case("cp-fifo", 3, lambda c: ["cp", c.path("fifo"), _dst(c)], says="a FIFO"),
    Case("cp-device", 3, lambda c: ["cp", "/dev/null", _dst(c)], says="a character device"),
    Case(
        "cp-non-utf8-name",
        3,
        lambda c: ["cp", c.path("caf\udce9.txt"), f"s3://{c.bucket}/"],
        says="not valid UTF-8",
    ),
    Case("cp-unknown-bucket", 4, lambda c: ["cp", c.file, "s3://no-such-bucket-here/k"]),
    Case("cp-missing-key", 4, lambda c: ["cp", f"s3://{c.bucket}/missing", c.path("m")]),
    Case(
        "cp-under-a-file",
        3,
        lambda c: ["cp", c.object_url, c.path("file.txt", "x")],
        says="is not a directory",
    ),
    Case(
        "cp-r-under-a-file",
        3,
        lambda c: ["cp", "-r", f"s3://{c.bucket}/", c.path("file.txt", "x")],
        says="is not a directory",
    ),
    Case("cp-r-onto-a-file", 3, lambda c: ["cp", "-r", f"s3://{c.bucket}/", c.file]),
    Case(
        "cp-r-read-only-dir",
        3,
        lambda c: ["cp", "-r", f"s3://{c.bucket}/", c.path("readonly")],
        says="permission denied",
        unprivileged=True,
    ),
    Case(
        "cp-read-only-dir",
        3,
        lambda c: ["cp", c.object_url, c.path("readonly", "new", "")],
        says="permission denied",
        unprivileged=True,
    ),
    # cp: options
    Case("cp-bad-part-size", 2, lambda c: ["cp", c.file, _dst(c), "--part-size", "lots"]),
    Case("cp-tiny-part-size", 2, lambda c: ["cp", c.file, _dst(c), "--part-size", "1MiB"]),
    Case("cp-concurrency-0", 2, lambda c: ["cp", c.file, _dst(c), "--concurrency", "0"]),
    Case("cp-concurrency-text", 2, lambda c: ["cp", c.file, _dst(c), "--concurrency", "x"]),
    Case("cp-memory-limit", 2, lambda c: ["cp", c.file, _dst(c), "--memory-limit", "lots"]),
    Case("cp-threshold", 2, lambda c: ["cp", c.file, _dst(c), "--multipart-threshold", "-1"]),
    Case("cp-storage-class", 2, lambda c: ["cp", c.file, _dst(c), "--storage-class", "FROZEN"]),
    Case("cp-rule-syntax", 2, lambda c: ["cp", c.file, _dst(c), "--storage-class-rule", "x"]),
    Case("cp-rule-class", 2, lambda c: ["cp", c.file, _dst(c), "--storage-class-rule", "*=FROZEN"]),
    Case("cp-bwlimit", 2, lambda c: ["cp", c.file, _dst(c), "--bwlimit", "fast"]),
    Case("cp-bwlimit-up", 2, lambda c: ["cp", c.file, _dst(c), "--bwlimit-up", "x/s"]),
    Case("cp-schedule", 2, lambda c: ["cp", c.file, _dst(c), "--bwlimit-schedule", "always"]),
    Case("cp-tps", 2, lambda c: ["cp", c.file, _dst(c), "--tps", "-1"]),
    Case("cp-checksum", 2, lambda c: ["cp", c.file, _dst(c), "--checksum", "sha1"]),
    Case("cp-ca-bundle-missing", 2, lambda c: ["cp", c.file, _dst(c), "--ca-bundle", "/nope"]),
    Case(
        "cp-ca-bundle-and-no-verify",
        2,
        lambda c: ["cp", c.file, _dst(c), "--ca-bundle", c.file, "--no-verify-ssl"],
    ),
    # connection and credentials
    Case(
        "cp-upload-wrong-secret",
        5,
        lambda c: ["cp", c.file, _dst(c)],
        env={"AWS_SECRET_ACCESS_KEY": WRONG_SECRET},
        says="rejected the credentials",
    ),
    Case(
        "cp-download-wrong-secret",
        5,
        lambda c: ["cp", c.object_url, c.path("dl")],
        env={"AWS_SECRET_ACCESS_KEY": WRONG_SECRET},
        says="rejected the credentials",
    ),
    Case(
        "ls-wrong-secret",
        5,
        lambda c: ["ls"],
        env={"AWS_SECRET_ACCESS_KEY": WRONG_SECRET},
        says="rejected the credentials",
    ),
    Case(
        "ls-wrong-access-key",
        5,
        lambda c: ["ls", f"s3://{c.bucket}/"],
        env={"AWS_ACCESS_KEY_ID": "NOBODY"},
    ),
    Case("profile-missing", 2, lambda c: ["ls", "--profile", "nosuch"], says="no profile 'nosuch'"),
    Case("profile-env-missing", 2, lambda c: ["ls"], env={"AWS_PROFILE": "nosuch"}),
    Case("endpoint-not-a-url", 2, lambda c: ["ls", "--endpoint-url", "not a url"]),
    Case("endpoint-ftp", 2, lambda c: ["ls", "--endpoint-url", "ftp://127.0.0.1:21"]),
    Case("endpoint-bad-port", 2, lambda c: ["ls", "--endpoint-url", "http://127.0.0.1:port"]),
    Case("endpoint-env-not-a-url", 2, lambda c: ["ls"], env={"AWS_ENDPOINT_URL": "nonsense"}),
    Case("endpoint-s3-env-no-host", 2, lambda c: ["ls"], env={"AWS_ENDPOINT_URL_S3": "http://"}),
    Case(
        "endpoint-unreachable",
        6,
        lambda c: ["ls", "--endpoint-url", f"http://127.0.0.1:{free_port()}"],
        says="cannot connect",
    ),
    Case(
        "https-to-http-port",
        6,
        lambda c: ["ls", "--endpoint-url", c.srv.endpoint_url.replace("http:", "https:")],
        says="http://",
    ),
    # ls
    Case("ls-unknown-bucket", 4, lambda c: ["ls", "s3://no-such-bucket-here/"]),
    Case("ls-bad-url", 2, lambda c: ["ls", "bucket/key"], says="malformed S3 URL"),
    # restore, restore-status
    Case("restore-bad-tier", 2, lambda c: ["restore", f"s3://{c.bucket}/p/", "--tier", "Fast"]),
    Case("restore-days-0", 2, lambda c: ["restore", f"s3://{c.bucket}/p/", "--days", "0"]),
    Case("restore-poll", 2, lambda c: ["restore", f"s3://{c.bucket}/p/", "--poll-interval", "x"]),
    Case("restore-tps", 2, lambda c: ["restore", f"s3://{c.bucket}/p/", "--tps", "-5"]),
    Case("restore-two-buckets", 2, lambda c: ["restore", _dst(c), "s3://other-bucket/k"]),
    Case("restore-nothing", 2, lambda c: ["restore", f"s3://{c.bucket}/nothing-here/"]),
    Case(
        "restore-prices",
        3,
        lambda c: ["restore", f"s3://{c.bucket}/p/", "--dry-run", "--prices", c.path("none")],
    ),
    Case("status-no-job", 2, lambda c: ["restore-status"], says="--state"),
    Case("status-no-state", 2, lambda c: ["restore-status", "--state", c.path("none.sqlite")]),
    Case("status-unknown-job", 2, lambda c: ["restore-status", f"s3://{c.bucket}/never/"]),
    Case("status-not-sqlite", 3, lambda c: ["restore-status", "--state", c.file]),
    # abort-uploads
    Case("abort-bad-age", 2, lambda c: ["abort-uploads", f"s3://{c.bucket}/", "--older-than", "x"]),
    Case("abort-unknown-bucket", 4, lambda c: ["abort-uploads", "s3://no-such-bucket-here/"]),
    # serve, demo, bench
    Case("serve-a-file", 3, lambda c: ["serve", c.file], says="not a directory"),
    Case("serve-bad-bucket", 2, lambda c: ["serve", c.path("s"), "--bucket", "../evil"]),
    Case("serve-port-in-use", 2, lambda c: ["serve", c.path("s"), "--port", str(c.busy_port)]),
    Case("serve-port-range", 2, lambda c: ["serve", c.path("s"), "--port", "70000"]),
    Case("demo-bad-size", 2, lambda c: ["demo", "--size", "lots"]),
    Case("demo-concurrency", 2, lambda c: ["demo", "--concurrency", "0"]),
    Case("bench", 2, lambda c: ["bench"], says="scripts/dev.sh bench"),
    # FASTXFER_* (TransferConfig.from_env): the variable is named
    *[
        Case(
            f"env-{name.lower()}-{i}",
            2,
            lambda c: ["cp", c.file, _dst(c)],
            env={name: value},
            says=name,
        )
        for name, values in [
            ("FASTXFER_CONCURRENCY", ["0", "5000"]),
            ("FASTXFER_PART_SIZE", ["huge", "1MiB"]),
            ("FASTXFER_MULTIPART_THRESHOLD", ["-5"]),
            ("FASTXFER_MEMORY_LIMIT", ["100GiB"]),
            ("FASTXFER_CHECKSUM", ["sha1"]),
            ("FASTXFER_STORAGE_CLASS", ["FROZEN"]),
            ("FASTXFER_BWLIMIT", ["fast"]),
            ("FASTXFER_BWLIMIT_UP", ["-1"]),
            ("FASTXFER_BWLIMIT_DOWN", ["1 parsec"]),
            ("FASTXFER_BWLIMIT_PER_CONNECTION", ["x"]),
            ("FASTXFER_BWLIMIT_SCHEDULE", ["Mon-Fri 25:00-26:00 1MiB/s"]),
            ("FASTXFER_TPS", ["many"]),
        ]
        for i, value in enumerate(values)
    ],
]


@pytest.fixture(scope="module")
def bad_input_results(
    rclone_server: LocalS3Server,
) -> Iterator[dict[str, tuple[Ctx, subprocess.CompletedProcess[str]]]]:
    """Every case run once, three processes at a time (each is mostly interpreter start)."""
    bucket = rclone_server.make_bucket()
    rclone_server.client().put_object(Bucket=bucket, Key="object.txt", Body=b"object")
    with (
        tempfile.TemporaryDirectory(prefix="fx-bad-input-") as root,
        socket.create_server(("127.0.0.1", 0)) as busy,
    ):
        os.chmod(root, 0o755)
        ctx = Ctx(rclone_server, bucket, root, busy.getsockname()[1])
        with open(ctx.file, "w") as f:
            f.write("data")
        os.mkfifo(ctx.path("fifo"))
        with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as fb:
            fb.write(b"latin-1 name")
        os.mkdir(ctx.path("readonly"), 0o555)
        base = isolated_env(
            root,
            AWS_ACCESS_KEY_ID=rclone_server.access_key,
            AWS_SECRET_ACCESS_KEY=rclone_server.secret_key,
            AWS_ENDPOINT_URL=rclone_server.endpoint_url,
        )

        def one(case: Case) -> tuple[Ctx, subprocess.CompletedProcess[str]]:
            return ctx, run(case.args(ctx), {**base, **case.env}, unprivileged=case.unprivileged)

        with ThreadPoolExecutor(max_workers=3) as pool:
            results = dict(zip([c.id for c in CASES], pool.map(one, CASES), strict=True))
        yield results
        os.chmod(ctx.path("readonly"), 0o755)


def test_at_least_40_bad_input_cases_across_every_command() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.args(_FAKE_CTX)[0] for c in CASES if c.args(_FAKE_CTX)}
    assert commands >= {
        "cp",
        "ls",
        "restore",
        "restore-status",
        "abort-uploads",
        "serve",
        "demo",
        "bench",
    }
    variables = {k for c in CASES for k in c.env if k.startswith("FASTXFER_")}
    assert len(variables) == 12  # every variable TransferConfig.from_env reads


_FAKE_CTX = Ctx(LocalS3Server(), "bucket", "/nowhere", 1)  # to read the cases' commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(
    case: Case, bad_input_results: dict[str, tuple[Ctx, subprocess.CompletedProcess[str]]]
) -> None:
    ctx, r = bad_input_results[case.id]
    output = r.stdout + r.stderr
    assert r.returncode == case.code, output
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fastxfer"), lines
    assert "Traceback" not in output
    assert case.says in lines[0]
    assert r.stdout == ""  # e.g. `serve` never announces a server that is not its own
    for secret in (ctx.srv.secret_key, WRONG_SECRET, *case.never(ctx)):
        assert secret not in output
