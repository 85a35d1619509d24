"""The lean request path (fastxfer/leanpath.py) against botocore's own, and on a real server.

The engine's tests run on both paths (conftest.request_path); these check what
is particular to the lean one: that it sends what botocore would send, that
the server accepts its signatures for any key, that its errors, retries and
credential refreshes are botocore's, and what falls back to botocore.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import rclone_config

from fastxfer import FastxferError, TransferConfig, TransferManager
from fastxfer.body import PartBody
from fastxfer.clock import SystemClock
from fastxfer.leanpath import LeanPath, _Reply
from fastxfer.localserver import LocalS3Server
from fastxfer.session import Session

from faultproxy import FaultProxy


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


VOLATILE = {
    "authorization",
    "x-amz-date",
    "user-agent",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-amz-content-sha256",
    "x-amz-security-token",
}
"""Headers that differ between two signings of one request (time, ids)."""


def _body() -> PartBody:
    return PartBody(memoryview(b"0123456789"))


CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "put_object",
        {
            "Key": "dir one/ünï+c=d%e~f",
            "Body": _body(),
            "ContentLength": 10,
            "Metadata": {"fastxfer-crc64nvme": "AAAAAAAAAAA=", "Mixed-Case": "v a/l"},
            "ContentType": "text/plain",
            "StorageClass": "STANDARD_IA",
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": "alias/key",
            "ChecksumAlgorithm": "CRC64NVME",
            "ChecksumCRC64NVME": "AAAAAAAAAAA=",
            "BucketKeyEnabled": True,
        },
    ),
    (
        "upload_part",
        {
            "Key": "k",
            "UploadId": "a/b+c=d e",
            "PartNumber": 3,
            "Body": _body(),
            "ContentLength": 10,
            "ContentMD5": "eB5eJF1ptWaXm4bijSPyxw==",
        },
    ),
    (
        "get_object",
        {
            "Key": "dir//x y",
            "Range": "bytes=0-9",
            "IfMatch": '"abc"',
            "ChecksumMode": "ENABLED",
            "VersionId": "v 1+2",
        },
    ),
    ("head_object", {"Key": "/leading/slash", "ChecksumMode": "ENABLED"}),
    ("head_object", {"Key": "a", "PartNumber": 1}),
]


def _random_key(rng: random.Random) -> str:
    pool = "abcXYZ019 /+=&%~!*'();:@$,?#[]{}^`|\\\"<>-_.ü日本😀\t"
    return "".join(rng.choice(pool) for _ in range(rng.randint(1, 24)))


async def _botocore_request(session: Session, op: str, params: dict[str, Any]) -> Any:
    client = session._client
    client.meta.events.register_first("before-send.s3", _capture)
    try:
        await getattr(client, op)(**params)
    except _Captured as got:
        return got.request
    finally:
        client.meta.events.unregister("before-send.s3", _capture)
    raise AssertionError("botocore sent nothing")


def _signed(headers: Any) -> list[str]:
    auth = dict(headers)["Authorization"]
    auth = auth.decode() if isinstance(auth, bytes) else str(auth)
    return sorted(auth.split("SignedHeaders=")[1].split(",")[0].split(";"))


@pytest.mark.parametrize(
    "where",
    [
        {"endpoint_url": "http://127.0.0.1:9", "addressing_style": "path"},
        {"region": "eu-west-1", "addressing_style": "virtual"},
        {"region": "us-east-1", "addressing_style": "path"},
    ],
    ids=["custom-endpoint-path", "aws-virtual", "aws-path"],
)
async def test_lean_request_is_the_request_botocore_would_send(where: dict[str, Any]) -> None:
    """URL (endpoint, addressing, key and query encoding), headers and the set of
    signed headers equal botocore's for the same call; nothing is sent."""
    cfg = TransferConfig(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", **where)
    rng = random.Random(20261130)
    async with Session(cfg, SystemClock()) as session:
        lean = session.lean
        assert lean is not None
        cases = list(CASES)
        cases += [("head_object", {"Key": _random_key(rng)}) for _ in range(200)]
        for op, given in cases:
            params = {"Bucket": "fx-bucket", **given}
            assert lean.accepts(op, params), (op, params)
            want = await _botocore_request(session, op, dict(params))
            ep = await lean._endpoint_for(op, "fx-bucket")
            assert ep is not None
            path, headers = lean.build(op, params, ep)
            assert ep.origin + path == want.url, (op, params["Key"])
            ours = {k.lower(): v for k, v in headers.items()}
            theirs = {k.lower(): v for k, v in want.headers.items()}
            for name in VOLATILE:
                ours.pop(name, None)
                theirs.pop(name, None)
            theirs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in theirs.items()}
            assert theirs.pop("host") == ep.host
            assert ours == theirs
            signed = lean.sign(want.method, path, ep, headers, await lean._credentials_provider())
            assert _signed(signed) == _signed(want.headers), op
            payload = want.headers["X-Amz-Content-SHA256"]
            assert signed["x-amz-content-sha256"].encode() == payload == b"UNSIGNED-PAYLOAD"


async def test_calls_botocore_would_transform_take_botocores_path() -> None:
    cfg = TransferConfig(
        endpoint_url="http://127.0.0.1:9", aws_access_key_id="a", aws_secret_access_key="b"
    )
    async with Session(cfg, SystemClock()) as session:
        lean = session.lean
        assert lean is not None
        base = {"Bucket": "fx-bucket", "Key": "k"}
        assert lean.accepts("head_object", base)
        # SSE-C: botocore base64-encodes the key and adds its MD5.
        assert not lean.accepts("get_object", {**base, "SSECustomerKey": "x" * 32})
        # A checksum algorithm without its value: botocore would compute it.
        assert not lean.accepts("put_object", {**base, "ChecksumAlgorithm": "CRC32"})
        # Non-ASCII metadata: botocore refuses it with its own error.
        assert not lean.accepts("put_object", {**base, "Metadata": {"k": "ü"}})
        # Timestamps: botocore formats them per location.
        assert not lean.accepts("head_object", {**base, "IfModifiedSince": 0})
        assert not lean.accepts("list_objects_v2", {"Bucket": "fx-bucket"})
        assert not lean.accepts("head_object", {"Bucket": "fx-bucket"})


async def test_lean_path_is_the_default_and_can_be_turned_off(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    src = os.path.join(work_dir, "src")
    data = os.urandom(40 * 1024 * 1024 + 7)
    with open(src, "wb") as f:
        f.write(data)
    for lean_path in (True, False):
        cfg = rclone_config(rclone_server, part_size=8 * 1024 * 1024, lean_path=lean_path)
        assert TransferConfig.from_env({"FASTXFER_LEAN_PATH": "off"}).lean_path is False
        async with TransferManager(cfg) as tm:
            key = f"obj-{lean_path}"
            await tm.upload(src, bucket, key)
            dest = os.path.join(work_dir, key)
            await tm.download(bucket, key, dest)
            with open(dest, "rb") as f:
                assert f.read() == data
            lean = tm.session.lean
            if lean_path:
                assert lean is not None
                # 5 parts, the HEAD before the download and its ranged GETs.
                assert lean.requests >= 5 + 1 + 3
            else:
                assert lean is None


SPECIAL_KEYS = [
    "a b",
    "ünï/çødé",
    "x+y=z&w",
    "100%",
    "tilde~",
    "semi;colon",
    "quote'd\"",
    "(paren)[brack]{brace}",
    "hash#frag?q=1",
    "emoji 😀",
    "*star,comma@at$dollar",
    "back\\slash",
    "dir/deeper/file.txt",
]


async def test_the_server_accepts_lean_signatures_for_any_key(
    tm: TransferManager, bucket: str, work_dir: str, s3: Any
) -> None:
    """rclone serve s3 checks SigV4: PUT, HEAD and GET of awkward keys, all lean."""
    session = tm.session
    assert session.lean is not None
    before = session.lean.requests
    for i, key in enumerate(SPECIAL_KEYS):
        body = f"body {i}".encode()
        await session.request(
            "put_object",
            bucket=bucket,
            key=key,
            Body=PartBody(memoryview(body)),
            ContentLength=len(body),
        )
        info = await session.head(bucket, key)
        assert info.size == len(body)
        async with session.open_get(bucket, key) as resp:
            assert await resp["Body"].read() == body
    assert session.lean.requests - before == 3 * len(SPECIAL_KEYS)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed == set(SPECIAL_KEYS)


async def _call(session: Session, op: str, kw: dict[str, Any]) -> None:
    if op == "get_object":
        async with session.open_get(kw["bucket"], kw["key"]):
            return
    await session.request(op, **kw)


def _put(data: bytes) -> dict[str, Any]:
    return {"Body": PartBody(memoryview(data)), "ContentLength": len(data)}


async def test_errors_are_the_same_on_both_paths(rclone_server: LocalS3Server, bucket: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("head_object", {"bucket": bucket, "key": "missing"}),
        ("head_object", {"bucket": "fx-no-such-bucket", "key": "k"}),
        ("get_object", {"bucket": bucket, "key": "missing"}),
        ("put_object", {"bucket": "fx-no-such-bucket", "key": "k", "Body": b"x"}),
    ]
    seen: dict[bool, list[tuple[type[BaseException], str, str | None]]] = {}
    for lean_path in (True, False):
        async with TransferManager(rclone_config(rclone_server, lean_path=lean_path)) as tm:
            session = tm.session
            got: list[tuple[type[BaseException], str, str | None]] = []
            for op, given in calls:
                kw = dict(given)
                if "Body" in kw:
                    kw["Body"] = PartBody(memoryview(kw["Body"]))
                with pytest.raises(FastxferError) as err:
                    await _call(session, op, kw)
                got.append((type(err.value), str(err.value), getattr(err.value, "code", None)))
            seen[lean_path] = got
            if lean_path:
                assert session.lean is not None
                assert session.lean.requests == len(calls)
    assert seen[True] == seen[False]


async def test_slowdown_is_retried_by_botocores_retry_handler(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    """The lean path asks botocore's needs-retry handlers: SlowDown is retried after
    their back-off and the pacer hears of it; the object then lands."""

    def is_put(method: str, target: str, headers: Any) -> bool:
        return method == "PUT" and "uploadId=" not in target

    async with FaultProxy("127.0.0.1", rclone_server.port, slowdown=is_put, slowdown_count=2) as px:
        cfg = TransferConfig(
            endpoint_url=px.endpoint_url,
            aws_access_key_id=rclone_server.access_key,
            aws_secret_access_key=rclone_server.secret_key,
            max_attempts=5,
        )
        async with TransferManager(cfg) as tm:
            session = tm.session
            assert session.lean is not None
            r = await session.request(
                "put_object",
                bucket=bucket,
                key="k",
                Body=PartBody(memoryview(b"abc")),
                ContentLength=3,
            )
            assert r["ResponseMetadata"]["RetryAttempts"] == 2
            assert session.lean.requests == 3
            assert tm.stats().pacer.throttles == 2
            assert (await session.head(bucket, "k")).size == 3
        assert px.slowdowns == 2


async def test_credentials_are_refreshed_on_the_lean_path(
    rclone_server: LocalS3Server,
    bucket: str,
    work_dir: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials that expire soon (a credential_process) are refreshed before
    lean requests, as botocore refreshes them before its own."""
    counter = os.path.join(work_dir, "count")
    script = os.path.join(work_dir, "creds.py")
    with open(script, "w") as f:
        f.write(
            "import datetime, json\n"
            f"open({counter!r}, 'a').write('x')\n"
            "exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)\n"
            "print(json.dumps({'Version': 1,"
            f" 'AccessKeyId': {rclone_server.access_key!r},"
            f" 'SecretAccessKey': {rclone_server.secret_key!r},"
            " 'Expiration': exp.isoformat()}))\n"
        )
    os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR)
    config = os.path.join(work_dir, "aws-config")
    with open(config, "w") as f:
        f.write(f"[profile lean]\ncredential_process = {sys.executable} {script}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", config)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cfg = TransferConfig(endpoint_url=rclone_server.endpoint_url, profile="lean")
    async with TransferManager(cfg) as tm:
        session = tm.session
        assert session.lean is not None
        for i in range(3):
            await session.request(
                "put_object",
                bucket=bucket,
                key=f"c{i}",
                Body=PartBody(memoryview(b"x")),
                ContentLength=1,
            )
        assert session.lean.requests == 3
    with open(counter) as f:
        # Five minutes left is inside botocore's mandatory refresh window: each
        # request refreshed them.
        assert len(f.read()) >= 3


def _synthetic_answers(lean: LeanPath, op: str) -> list[dict[str, str]]:
    """Answer headers naming every header member of ``op``'s output, each type."""
    table = lean._outputs[op]
    sample = {
        "string": "some value",
        "integer": "42",
        "long": "1099511627776",
        "boolean": "true",
        "timestamp": "Wed, 21 Oct 2015 07:28:00 GMT",
    }
    every = {wire: sample[kind] for wire, (_, kind) in table.headers.items()}
    assert "expires" not in every  # botocore rewrites it before parsing
    every.update(
        {
            "x-amz-request-id": "REQ",
            "x-amz-id-2": "HOST",
            "x-amz-meta-fastxfer-crc64nvme": "AAAAAAAAAAA=",
            "x-amz-meta-mixed": "v",
        }
    )
    booleans_false = {w: "false" for w, (_, k) in table.headers.items() if k == "boolean"}
    return [
        every,
        {**every, **booleans_false},
        {"etag": '"abc"', "content-length": "0"},
        {"x-amzn-requestid": "R2", "etag": '"e"'},
    ]


async def test_fast_answer_parse_equals_botocores(
    tm: TransferManager,
    bucket: str,
    work_dir: str,
    moto_config: Callable[..., TransferConfig],
    moto_bucket: str,
) -> None:
    """Answers read from their headers equal botocore's rest-xml parse of them:
    real answers of rclone and moto (PUT with metadata, parts, HEAD, GET) and
    synthetic ones naming every header member of each operation's output."""
    src = os.path.join(work_dir, "src")
    with open(src, "wb") as f:
        f.write(os.urandom(11 * 1024 * 1024))
    small = os.path.join(work_dir, "small")
    with open(small, "wb") as f:
        f.write(b"x" * 1000)
    seen: list[tuple[LeanPath, str, Any, Any]] = []
    servers: tuple[tuple[TransferManager | None, str], ...] = ((tm, bucket), (None, moto_bucket))
    for manager, where in servers:
        cfg = moto_config(part_size=5 * 1024 * 1024, multipart_threshold=5 * 1024 * 1024)
        async with contextlib.AsyncExitStack() as stack:
            m = (
                manager
                if manager is not None
                else await stack.enter_async_context(TransferManager(cfg))
            )
            lean = m.session.lean
            assert lean is not None

            def record(op: str, reply: Any, content: Any, lean: LeanPath = lean) -> Any:
                seen.append((lean, op, reply, content))
                return LeanPath._fast_parse(lean, op, reply, content)

            lean._fast_parse = record  # type: ignore[method-assign]
            await m.upload(src, where, "multi", metadata={"Colour": "blue"})
            await m.upload(small, where, "small", metadata={"k": "v"})
            await m.download(where, "multi", os.path.join(work_dir, "multi.out"))
            await m.head(where, "small")
    ops = {op for _, op, _, _ in seen}
    assert ops >= {"put_object", "upload_part", "head_object", "get_object"}, ops
    for lean, op, reply, content in seen:
        fast = LeanPath._fast_parse(lean, op, reply, content)  # not the recorder
        slow = await lean._botocore_parse(lean._models[op], reply, content, {})
        assert fast == slow, op
    lean = seen[0][0]
    for op in ("put_object", "upload_part", "head_object", "get_object"):
        for headers in _synthetic_answers(lean, op):
            reply = _Reply("http://x/b/k", 200, dict(headers), None)
            content = object() if op == "get_object" else b""
            fast = lean._fast_parse(op, reply, content)
            assert fast is not None, (op, headers)
            slow = await lean._botocore_parse(lean._models[op], reply, content, {})
            assert fast == slow, op
    # What botocore rewrites before parsing is left to botocore.
    expires = _Reply("http://x/b/k", 200, {"expires": "soon"}, None)
    assert lean._fast_parse("head_object", expires, b"") is None


async def test_get_with_checksum_mode_gets_botocores_checksum_body(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any
) -> None:
    """A whole-object GET with ChecksumMode: the body is botocore's validating one
    on both paths (an object stored with a CRC32 by another client)."""
    data = os.urandom(100_000)
    moto_s3.put_object(Bucket=moto_bucket, Key="crc32", Body=data, ChecksumAlgorithm="CRC32")
    kinds = []
    for lean_path in (True, False):
        async with TransferManager(moto_config(lean_path=lean_path)) as tm:
            async with tm.session.open_get(moto_bucket, "crc32", ChecksumMode="ENABLED") as r:
                kinds.append(type(r["Body"]).__name__)
                assert await r["Body"].read() == data
                assert r["ChecksumCRC32"]
            if lean_path:
                assert tm.session.lean is not None
                assert tm.session.lean.requests == 1
    assert kinds[0] == kinds[1] == "AioStreamingChecksumBody"
