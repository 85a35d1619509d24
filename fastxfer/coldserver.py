"""A local Glacier-like S3 server: moto 5.2.5 in a subprocess, with AWS-like restores.

``fastxfer demo --cold`` shows batch restores on it without an AWS account,
and fastxfer's tests and benchmarks run restores against it.

Stock moto finishes a RestoreObject instantly (its optional state-manager
delay starts at the PUT, not at the restore) and answers a repeated
RestoreObject during a restore with 200.  AWS instead keeps the object
unreadable for hours after the restore request and answers 409
RestoreAlreadyInProgress.  This server fixes both, so fastxfer's restore →
poll → download pipeline runs against a restore that really takes
``restore_delay`` seconds:

* RestoreObject: 202 on the first request, 409 RestoreAlreadyInProgress while
  the restore runs, 200 once restored (the expiry is extended).  On a
  non-archived object (STANDARD, GLACIER_IR, ...): 403 InvalidObjectState with
  AWS's message.  Missing key: 404 NoSuchKey.
* For ``restore_delay`` seconds counted from the restore request, HEAD shows
  ``x-amz-restore: ongoing-request="true"`` and GET answers 403
  InvalidObjectState (CopyObject: ObjectNotInActiveTierError); afterwards HEAD
  shows ``ongoing-request="false", expiry-date="..."`` (the completion time
  plus Days, rounded up to midnight UTC, as AWS does) and GET works.
* ListObjectsV2 with ``OptionalObjectAttributes=RestoreStatus`` returns
  ``<RestoreStatus>`` per restored object (stock moto ignores the option);
  ``list_restore_status=False`` switches that off to test the HEAD fallback.
* Every S3 request is counted by operation name and per key, and logged as an
  :class:`Event` with its ``time.monotonic()`` arrival time; completed restores
  appear as ``RestoreCompleted`` events at the moment they completed.

Why a subprocess and not an in-process ``ThreadedMotoServer``: the behaviour
is changed by patching moto's classes, and moto's backends are process-wide
globals; patching them in the calling process would change every ``mock_aws``
test too, and ``mock_aws`` resets would wipe this server's objects.  A child
process also keeps moto's CPU work (MD5 of every body, XML) off the GIL of the
asyncio client under test.  Startup costs ~1 s (importing moto); use one server
per module or session and ``reset()`` between tests.

Event times come from ``time.monotonic()`` in the server process.  On Linux
(CLOCK_MONOTONIC) and macOS that clock is system-wide, so they compare directly
with ``time.monotonic()`` in the tests.

Only path-style addressing is understood by the accounting (clients use
``s3={"addressing_style": "path"}``), region us-east-1, any credentials.
Restores ignore ``versionId`` (moto restores the latest version); a repeated
restore with a faster Tier during a restore gets 409 too (AWS accepts such a
speed upgrade).

Run directly (``python -m fastxfer.coldserver --port 5000``) for a manual
server; the control API is JSON under ``/_realistic/`` (not an S3 bucket name:
bucket names cannot start with ``_``).

Needs moto (``pip install 'fastxfer[demo]'``; the ``dev`` extra has it too),
which only the server process imports: importing this module does not import
moto (:func:`moto_installed` says whether the server can start), and nothing
in the engine imports this module; the CLI's ``demo --cold`` does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

MOTO_VERSION = "5.2.5"  # the patches below target this version's internals
DEFAULT_REGION = "us-east-1"
CONTROL_PREFIX = "/_realistic/"
RESTORE_COMPLETED = "RestoreCompleted"  # pseudo-operation in events()


class Event(NamedTuple):
    """One served request (or a completed restore) as seen by the server."""

    time: float  # time.monotonic() at arrival (RestoreCompleted: at completion)
    op: str  # S3 operation name, e.g. "GetObject", or RESTORE_COMPLETED
    bucket: str  # "" for service-level requests (ListBuckets)
    key: str  # "" for bucket-level requests
    status: int | None  # HTTP status answered; None for RestoreCompleted


# --------------------------------------------------------------------------
# Client side (the process that starts the server)
# --------------------------------------------------------------------------


def moto_installed() -> bool:
    """Whether the server can start here: moto and the web stack it serves with are
    importable (checked without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("moto", "flask", "werkzeug"))
    except (ImportError, ValueError):  # a parent package that fails, or a blocked module
        return False


class RealisticMotoServer:
    """moto with AWS-like restore timing and request accounting, in a subprocess.

    Example::

        with RealisticMotoServer(restore_delay=0.5) as server:
            config = Config(s3={"addressing_style": "path"})
            s3 = boto3.client("s3", **server.client_kwargs(), config=config)
            ...
            assert server.counts()["RestoreObject"] == 1000
    """

    def __init__(self, restore_delay: float = 3.0, *, list_restore_status: bool = True) -> None:
        self._restore_delay = restore_delay
        self._list_restore_status = list_restore_status
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Self:
        if self._proc is not None:
            return self
        args = [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",  # even under PYTHONWARNINGS=error
            "-m",
            "fastxfer.coldserver",
            "--port",
            "0",
            "--restore-delay",
            repr(self._restore_delay),
            "--parent-watch",
        ]
        if not self._list_restore_status:
            args.append("--no-list-restore-status")
        # stdin is the child's lifeline: it exits when the pipe closes, so a
        # killed test run cannot leave servers behind.  stderr is inherited so
        # crashes show up in pytest's captured output.
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._proc = proc
        self._finalizer = weakref.finalize(self, _stop_process, proc)
        try:
            self._port = _read_port(proc, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # idempotent; stops the child and reaps it
            self._finalizer = None
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addressing ----------------------------------------------------------

    @property
    def port(self) -> int:
        if self._proc is None:
            raise RuntimeError("RealisticMotoServer is not running; call start()")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for boto3/aiobotocore ``create_client("s3", ...)``.

        Add ``config=Config(s3={"addressing_style": "path"})`` yourself.
        """
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": DEFAULT_REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }

    def client(self) -> Any:
        """A boto3 client with the settings this server needs (path-style addressing)."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.client("s3", **self.client_kwargs(), config=config)

    def make_bucket(self, name: str) -> str:
        """Create a bucket through the S3 API (a counted CreateBucket) and return its name."""
        self.client().create_bucket(Bucket=name)
        return name

    # -- control -------------------------------------------------------------

    @property
    def restore_delay(self) -> float:
        return self._restore_delay

    def set_restore_delay(self, seconds: float) -> None:
        """Delay for restores requested from now on (running ones keep theirs)."""
        self._control("POST", "config", {"restore_delay": seconds})
        self._restore_delay = seconds

    def set_list_restore_status(self, enabled: bool) -> None:
        """Whether ListObjectsV2 honours ``OptionalObjectAttributes=RestoreStatus``."""
        self._control("POST", "config", {"list_restore_status": enabled})
        self._list_restore_status = enabled

    def reset(self) -> None:
        """Wipe all buckets and objects (moto reset) and all counts and events."""
        self._control("POST", "reset")

    def reset_counts(self) -> None:
        """Zero counts and events; restores still running keep their timing."""
        self._control("POST", "reset-counts")

    # -- accounting ----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Requests served so far, by S3 operation name (e.g. ``"RestoreObject"``)."""
        counts: dict[str, int] = self._control("GET", "counts")
        return counts

    def key_counts(self, bucket: str, key: str) -> dict[str, int]:
        """Requests served so far for one object, by S3 operation name."""
        counts: dict[str, int] = self._control("POST", "key-counts", {"bucket": bucket, "key": key})
        return counts

    def counts_by_key(self) -> dict[tuple[str, str], dict[str, int]]:
        """``key_counts`` of every (bucket, key) requested so far, in one call.

        Bucket-level requests appear under key ``""``, ListBuckets under ``("", "")``.
        """
        rows: list[list[Any]] = self._control("POST", "key-counts", {})
        return {(bucket, key): counts for bucket, key, counts in rows}

    def restore_requests(self, bucket: str, key: str) -> int:
        """RestoreObject requests for one object (whatever they were answered)."""
        return self.key_counts(bucket, key).get("RestoreObject", 0)

    def events(self, op: str | None = None) -> list[Event]:
        """Requests served (and restores completed) so far, oldest first."""
        rows: list[list[Any]] = self._control("POST", "events", {"op": op})
        return [Event(*row) for row in rows]

    def restore_completed_at(self, bucket: str, key: str) -> float | None:
        """``time.monotonic()`` when the object's (first) restore completed, if it has."""
        for e in self.events(RESTORE_COMPLETED):
            if (e.bucket, e.key) == (bucket, key):
                return e.time
        return None

    def _control(self, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
        # http.client rather than urllib: no proxy settings from the environment.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, CONTROL_PREFIX + name, body=payload)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"control {name}: HTTP {resp.status}: {data[:500]!r}")
            return json.loads(data)
        finally:
            conn.close()


def _read_port(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for the child's single line on stdout: the port it listens on."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"moto server did not start within {timeout} s")
    line = proc.stdout.readline()
    proc.stdout.close()  # the child writes nothing else there
    if not line.strip().isdigit():
        raise RuntimeError(f"moto server failed to start (exit status {proc.poll()})")
    return int(line)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # EOF: the child exits at once
    if proc.stdout is not None:
        proc.stdout.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------
# Server-process side (imports moto; never imported into the client process)
# --------------------------------------------------------------------------

# Sub-resources (query parameters) that select the S3 operation, first match
# wins; the value after the method is the operation without a sub-resource.
_KEY_OPS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "HEAD": ([], "HeadObject"),
    "GET": (
        [
            ("uploadId", "ListParts"),
            ("tagging", "GetObjectTagging"),
            ("acl", "GetObjectAcl"),
            ("attributes", "GetObjectAttributes"),
            ("legal-hold", "GetObjectLegalHold"),
            ("retention", "GetObjectRetention"),
        ],
        "GetObject",
    ),
    "PUT": (
        [
            ("uploadId", "UploadPart"),
            ("tagging", "PutObjectTagging"),
            ("acl", "PutObjectAcl"),
            ("legal-hold", "PutObjectLegalHold"),
            ("retention", "PutObjectRetention"),
        ],
        "PutObject",
    ),
    "POST": (
        [
            ("uploads", "CreateMultipartUpload"),
            ("uploadId", "CompleteMultipartUpload"),
            ("restore", "RestoreObject"),
            ("select", "SelectObjectContent"),
        ],
        "PostObject",
    ),
    "DELETE": (
        [("uploadId", "AbortMultipartUpload"), ("tagging", "DeleteObjectTagging")],
        "DeleteObject",
    ),
}
_BUCKET_SUBRESOURCES = {
    "lifecycle": "BucketLifecycleConfiguration",
    "versioning": "BucketVersioning",
    "policy": "BucketPolicy",
    "tagging": "BucketTagging",
    "acl": "BucketAcl",
    "cors": "BucketCors",
    "encryption": "BucketEncryption",
    "notification": "BucketNotificationConfiguration",
    "object-lock": "ObjectLockConfiguration",
    "ownershipControls": "BucketOwnershipControls",
    "publicAccessBlock": "PublicAccessBlock",
    "location": "BucketLocation",
}


def s3_operation(
    method: str, bucket: str, key: str, query: dict[str, list[str]], copy: bool
) -> str:
    """The S3 operation name of a path-style request."""
    if "x-id" in query:  # botocore names many operations in the URL itself
        return query["x-id"][0]
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} /"
    if key:
        subresources, default = _KEY_OPS.get(method, ([], f"{method}Object"))
        op = next((op for sub, op in subresources if sub in query), default)
        if copy and op == "UploadPart":
            return "UploadPartCopy"
        if copy and op == "PutObject":
            return "CopyObject"
        return op
    if method == "HEAD":
        return "HeadBucket"
    if method == "GET":
        if query.get("list-type") == ["2"]:
            return "ListObjectsV2"
        for sub, op in [("uploads", "ListMultipartUploads"), ("versions", "ListObjectVersions")]:
            if sub in query:
                return op
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method)
    for sub, name in _BUCKET_SUBRESOURCES.items():
        if sub in query:
            return verb + name
    return {"GET": "ListObjects", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(
        method, f"{method}Bucket"
    )


class _ServerState:
    """Settings and accounting shared by the patches and the WSGI middleware."""

    def __init__(self, restore_delay: float, list_restore_status: bool) -> None:
        self.lock = threading.Lock()
        self.restore_delay = restore_delay
        self.list_restore_status = list_restore_status
        self.counts: Counter[str] = Counter()
        self.key_counts: dict[tuple[str, str], Counter[str]] = {}
        self.events: list[Event] = []
        self.restores: list[tuple[float, str, str]] = []  # (completes at, bucket, key)

    def record(self, event: Event) -> None:
        with self.lock:
            self.counts[event.op] += 1
            self.key_counts.setdefault((event.bucket, event.key), Counter())[event.op] += 1
            self.events.append(event)

    def record_restore(self, ready_at: float, bucket: str, key: str) -> None:
        with self.lock:
            self.restores.append((ready_at, bucket, key))

    def clear(self) -> None:
        now = time.monotonic()
        with self.lock:
            self.counts.clear()
            self.key_counts.clear()
            self.events.clear()
            self.restores = [r for r in self.restores if r[0] > now]

    def snapshot_events(self, op: str | None) -> list[Event]:
        now = time.monotonic()
        with self.lock:
            done = [
                Event(t, RESTORE_COMPLETED, b, k, None) for t, b, k in self.restores if t <= now
            ]
            events = [e for e in [*self.events, *done] if op is None or e.op == op]
        return sorted(events, key=lambda e: e.time)


def _patch_moto(state: _ServerState) -> None:
    """Make moto's restores take ``state.restore_delay`` from the restore request.

    The restore state lives on moto's FakeKey (one per object version), so a
    new PUT of the key starts afresh and moto's own checks (GET → 403
    InvalidObjectState, CopyObject → ObjectNotInActiveTierError, the
    x-amz-restore header) follow it without further changes.
    """
    import datetime

    import moto
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.s3.exceptions import InvalidObjectState, S3ClientError
    from moto.s3.models import FakeKey, S3Backend
    from moto.s3.responses import S3Response
    from moto.s3.utils import ARCHIVE_STORAGE_CLASSES

    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"fastxfer/coldserver.py patches moto {MOTO_VERSION} internals, found "
            f"moto {moto.__version__}: re-check the patches, then update MOTO_VERSION"
        )
    ready_attr = "_realistic_restore_ready_at"  # monotonic time the restore completes

    class RestoreAlreadyInProgress(S3ClientError):
        code = "RestoreAlreadyInProgress"

        def __init__(self) -> None:
            super().__init__("Object restore is already in progress")

    def status(self: FakeKey) -> str | None:
        # Replaces moto's state-manager status (whose clock starts at the PUT).
        ready_at: float | None = getattr(self, ready_attr, None)
        if ready_at is None:
            return None  # never restored
        return "IN_PROGRESS" if time.monotonic() < ready_at else "RESTORED"

    def set_status(self: FakeKey, value: str | None) -> None:
        self._status = value  # as moto's setter; our getter ignores it

    original_restore = FakeKey.restore

    def restore(self: FakeKey, days: int) -> None:
        original_restore(self, days)  # sets moto's expiry, sends the POST event
        now = time.monotonic()
        ready_at: float | None = getattr(self, ready_attr, None)
        if ready_at is None:  # the first restore starts the clock
            ready_at = now + state.restore_delay
            setattr(self, ready_attr, ready_at)
            state.record_restore(ready_at, self.bucket_name or "", self.name)
        # AWS: completion time + Days, rounded up to the next midnight UTC.
        expiry = utcnow() + datetime.timedelta(seconds=max(0.0, ready_at - now), days=days)
        self.set_expiry(
            datetime.datetime.combine(expiry.date(), datetime.time()) + datetime.timedelta(days=1)
        )

    original_restore_object = S3Backend.restore_object
    restore_lock = threading.Lock()  # concurrent first restores: one 202, the rest 409

    def restore_object(
        self: S3Backend, bucket_name: str, key_name: str, days: str | None, type_: str | None
    ) -> bool:
        with restore_lock:
            key = self.get_object(bucket_name, key_name)
            if key is not None and key.storage_class not in ARCHIVE_STORAGE_CLASSES:
                error = InvalidObjectState(storage_class=key.storage_class)
                error.message = "Restore is not allowed for the object's current storage class"
                raise error
            if key is not None and key.status == "IN_PROGRESS":
                raise RestoreAlreadyInProgress
            return original_restore_object(self, bucket_name, key_name, days, type_)

    original_serialized = S3Response.serialized

    def serialized(self: S3Response, action_result: ActionResult) -> Any:
        result = action_result.result
        if isinstance(result, RestoreAlreadyInProgress):
            # moto takes error statuses from the botocore model, which does not
            # know this error: it would answer 400.
            _, headers, body = original_serialized(self, action_result)
            return 409, headers, body
        if (
            isinstance(result, dict)
            and self.data.get("Action") == "ListObjectsV2"
            and state.list_restore_status
            and "RestoreStatus" in self.headers.get("x-amz-optional-object-attributes", "")
        ):
            _add_restore_status(self, result)
        return original_serialized(self, action_result)

    def _add_restore_status(response: S3Response, result: dict[str, Any]) -> None:
        url_encoded = result.get("EncodingType") == "url"
        for item in result.get("Contents", []):
            name = unquote(item["Key"]) if url_encoded else item["Key"]
            key = response.backend.get_object(response.bucket_name, name)
            if key is None or key.status is None:
                continue  # AWS omits RestoreStatus for never-restored objects
            in_progress = key.status == "IN_PROGRESS"
            item["RestoreStatus"] = {"IsRestoreInProgress": in_progress}
            if not in_progress and key._expiry is not None:
                item["RestoreStatus"]["RestoreExpiryDate"] = key._expiry

    # setattr: mypy rightly refuses assignments to methods and properties.
    setattr(FakeKey, "status", property(status, set_status))  # noqa: B010
    setattr(FakeKey, "restore", restore)  # noqa: B010
    setattr(S3Backend, "restore_object", restore_object)  # noqa: B010
    setattr(S3Response, "serialized", serialized)  # noqa: B010


_WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class _Accounting:
    """WSGI middleware: counts and logs S3 requests, serves the control API."""

    def __init__(self, app: _WSGIApp, state: _ServerState, reset_moto: Callable[[], None]) -> None:
        self.app = app
        self.state = state
        self.reset_moto = reset_moto

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        arrived = time.monotonic()
        path = unquote(urlsplit(environ.get("RAW_URI") or environ["PATH_INFO"]).path)
        if path.startswith(CONTROL_PREFIX):
            return self.control(path.removeprefix(CONTROL_PREFIX), environ, start_response)
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        bucket, _, key = path.lstrip("/").partition("/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        op = s3_operation(
            environ["REQUEST_METHOD"], bucket, key, query, "HTTP_X_AMZ_COPY_SOURCE" in environ
        )
        statuses: list[int] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(int(status[:3]))
            return start_response(status, headers, exc_info)

        try:
            # The response is fully computed when app() returns (only the
            # body is still to be sent), so a client never sees an answer
            # before its request is counted.
            return self.app(environ, recording_start_response)
        finally:
            self.state.record(Event(arrived, op, bucket, key, statuses[-1] if statuses else 500))

    def control(self, name: str, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        state = self.state
        length = int(environ.get("CONTENT_LENGTH") or 0)
        args: dict[str, Any] = json.loads(environ["wsgi.input"].read(length) or b"{}")
        result: Any = {}
        if name == "counts":
            with state.lock:
                result = dict(state.counts)
        elif name == "key-counts":
            with state.lock:
                if "bucket" in args:
                    result = dict(state.key_counts.get((args["bucket"], args["key"]), {}))
                else:
                    result = [[b, k, dict(c)] for (b, k), c in state.key_counts.items()]
        elif name == "events":
            result = state.snapshot_events(args.get("op"))
        elif name == "reset":
            self.reset_moto()
            state.clear()
            with state.lock:
                state.restores.clear()
        elif name == "reset-counts":
            state.clear()
        elif name == "config":
            state.restore_delay = float(args.get("restore_delay", state.restore_delay))
            state.list_restore_status = bool(
                args.get("list_restore_status", state.list_restore_status)
            )
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown control endpoint"]
        body = json.dumps(result).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


# A (never checked) SigV4 header that routes the warm-up request to moto's S3.
_WARMUP_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20200101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


def serve(port: int, restore_delay: float, list_restore_status: bool, parent_watch: bool) -> None:
    """Run the server in this process until killed (or stdin closes)."""
    from moto.moto_api._internal.models import moto_api_backend
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server
    from werkzeug.test import Client

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # one line per request drowns the test output

    state = _ServerState(restore_delay, list_restore_status)
    _patch_moto(state)
    moto_app = DomainDispatcherApplication(create_backend_app)
    # Warm up (uncounted): the first S3 request builds moto's S3 app and loads
    # the service model (~0.2 s), which would skew the first timed request.
    Client(moto_app).get("/", headers={"Authorization": _WARMUP_AUTH}).close()
    app = _Accounting(moto_app, state, moto_api_backend.reset)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)
    if parent_watch:

        def exit_when_parent_goes() -> None:
            sys.stdin.buffer.read()  # returns at EOF: stop() or the parent died
            os._exit(0)  # state is throwaway; no need for a graceful shutdown

        threading.Thread(target=exit_when_parent_goes, daemon=True).start()
    print(server.server_port, flush=True)
    # The parent reads only that line and closes the pipe; anything moto
    # prints later goes to stderr instead of failing with a broken pipe.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--restore-delay", type=float, default=3.0)
    parser.add_argument("--no-list-restore-status", action="store_true")
    parser.add_argument("--parent-watch", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)
    serve(args.port, args.restore_delay, not args.no_list_restore_status, args.parent_watch)


if __name__ == "__main__":
    main()
