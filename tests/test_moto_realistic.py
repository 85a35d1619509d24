"""The realistic moto server behaves like AWS for restores and counts requests exactly."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fastxfer.coldserver import RESTORE_COMPLETED, RealisticMotoServer, s3_operation

DELAY = 0.5
BUCKET = "restore-tests"
CLIENT_CONFIG = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})


@pytest.fixture(scope="module")
def server() -> Iterator[RealisticMotoServer]:
    with RealisticMotoServer(restore_delay=DELAY) as srv:
        yield srv


@pytest.fixture
def s3(server: RealisticMotoServer) -> Iterator[Any]:
    server.reset()
    server.set_restore_delay(DELAY)
    server.set_list_restore_status(True)
    client = boto3.client("s3", **server.client_kwargs(), config=CLIENT_CONFIG)
    client.create_bucket(Bucket=BUCKET)
    server.reset_counts()
    yield client
    client.close()


def error_of(call: Any, **kwargs: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call(Bucket=BUCKET, **kwargs)
    response = info.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def restore(s3: Any, key: str, days: int = 1) -> int:
    response = s3.restore_object(Bucket=BUCKET, Key=key, RestoreRequest={"Days": days})
    status: int = response["ResponseMetadata"]["HTTPStatusCode"]
    return status


def wait_restored(s3: Any, key: str, timeout: float = 5.0) -> tuple[str, int]:
    """Poll HEAD until restored; return the x-amz-restore header and the HEAD count."""
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        header: str = s3.head_object(Bucket=BUCKET, Key=key).get("Restore", "")
        if 'ongoing-request="false"' in header:
            return header, polls
        time.sleep(0.02)
    raise AssertionError(f"{key} not restored within {timeout} s")


@pytest.mark.parametrize("storage_class", ["DEEP_ARCHIVE", "GLACIER"])
def test_restore_lifecycle(server: RealisticMotoServer, s3: Any, storage_class: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="cold", Body=b"frozen bytes", StorageClass=storage_class)
    assert error_of(s3.get_object, Key="cold")[:2] == (403, "InvalidObjectState")
    head = s3.head_object(Bucket=BUCKET, Key="cold")
    assert head["StorageClass"] == storage_class
    assert "Restore" not in head

    requested = time.monotonic()
    assert restore(s3, "cold") == 202
    assert error_of(s3.restore_object, Key="cold", RestoreRequest={"Days": 1}) == (
        409,
        "RestoreAlreadyInProgress",
        "Object restore is already in progress",
    )
    assert s3.head_object(Bucket=BUCKET, Key="cold")["Restore"] == 'ongoing-request="true"'
    assert error_of(s3.get_object, Key="cold")[:2] == (403, "InvalidObjectState")

    header, polls = wait_restored(s3, "cold")
    assert time.monotonic() - requested >= DELAY
    assert header.startswith('ongoing-request="false", expiry-date="')
    assert header.endswith(' 00:00:00 GMT"')  # AWS rounds the expiry up to midnight UTC
    assert s3.get_object(Bucket=BUCKET, Key="cold")["Body"].read() == b"frozen bytes"
    assert restore(s3, "cold") == 200  # already restored: AWS extends the expiry

    assert server.counts() == {
        "PutObject": 1,
        "GetObject": 3,
        "HeadObject": polls + 2,
        "RestoreObject": 3,
    }
    assert server.restore_requests(BUCKET, "cold") == 3
    assert server.restore_requests(BUCKET, "other") == 0

    events = server.events()
    first_restore = next(e for e in events if e.op == "RestoreObject")
    assert [e.status for e in events if e.op == "RestoreObject"] == [202, 409, 200]
    assert [e.status for e in events if e.op == "GetObject"] == [403, 403, 200]
    completed = server.restore_completed_at(BUCKET, "cold")
    assert completed is not None
    assert first_restore.time + DELAY <= completed < first_restore.time + DELAY + 0.25
    get_200 = next(e for e in events if e.op == "GetObject" and e.status == 200)
    assert completed < get_200.time
    assert [e.op for e in events].index(RESTORE_COMPLETED) < events.index(get_200)


def test_delay_counts_from_the_restore_request_not_the_put(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="old", Body=b"x", StorageClass="DEEP_ARCHIVE")
    time.sleep(DELAY + 0.1)  # stock moto's timer (started at the PUT) would have run out
    assert restore(s3, "old") == 202
    assert s3.head_object(Bucket=BUCKET, Key="old")["Restore"] == 'ongoing-request="true"'
    assert error_of(s3.get_object, Key="old")[:2] == (403, "InvalidObjectState")


@pytest.mark.parametrize("storage_class", ["STANDARD", "GLACIER_IR"])
def test_directly_readable_classes_cannot_be_restored(
    server: RealisticMotoServer, s3: Any, storage_class: str
) -> None:
    s3.put_object(Bucket=BUCKET, Key="warm", Body=b"warm bytes", StorageClass=storage_class)
    assert s3.get_object(Bucket=BUCKET, Key="warm")["Body"].read() == b"warm bytes"
    assert "Restore" not in s3.head_object(Bucket=BUCKET, Key="warm")
    assert error_of(s3.restore_object, Key="warm", RestoreRequest={"Days": 1}) == (
        403,
        "InvalidObjectState",
        "Restore is not allowed for the object's current storage class",
    )
    assert server.counts() == {"PutObject": 1, "GetObject": 1, "HeadObject": 1, "RestoreObject": 1}


def test_restore_of_missing_key(s3: Any) -> None:
    assert error_of(s3.restore_object, Key="nope", RestoreRequest={"Days": 1})[:2] == (
        404,
        "NoSuchKey",
    )


def test_copy_of_restoring_object_fails_until_restored(
    server: RealisticMotoServer, s3: Any
) -> None:
    server.set_restore_delay(0.2)
    s3.put_object(Bucket=BUCKET, Key="cold", Body=b"c", StorageClass="GLACIER")
    restore(s3, "cold")
    source = {"Bucket": BUCKET, "Key": "cold"}
    copy = s3.copy_object
    assert error_of(copy, Key="copy", CopySource=source)[:2] == (403, "ObjectNotInActiveTierError")
    wait_restored(s3, "cold")
    s3.copy_object(Bucket=BUCKET, Key="copy", CopySource=source, StorageClass="STANDARD")
    assert s3.get_object(Bucket=BUCKET, Key="copy")["Body"].read() == b"c"


def test_overwrite_discards_the_restored_copy(server: RealisticMotoServer, s3: Any) -> None:
    server.set_restore_delay(0)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"v1", StorageClass="DEEP_ARCHIVE")
    assert restore(s3, "k") == 202
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"v1"  # delay 0: at once
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"v2", StorageClass="DEEP_ARCHIVE")
    assert "Restore" not in s3.head_object(Bucket=BUCKET, Key="k")
    assert error_of(s3.get_object, Key="k")[:2] == (403, "InvalidObjectState")
    assert restore(s3, "k") == 202


def test_list_objects_v2_restore_status(server: RealisticMotoServer, s3: Any) -> None:
    server.set_restore_delay(0)
    s3.put_object(Bucket=BUCKET, Key="done", Body=b"d", StorageClass="DEEP_ARCHIVE")
    restore(s3, "done")
    server.set_restore_delay(30)
    s3.put_object(Bucket=BUCKET, Key="frozen", Body=b"f", StorageClass="DEEP_ARCHIVE")
    s3.put_object(Bucket=BUCKET, Key="ongoing", Body=b"o", StorageClass="DEEP_ARCHIVE")
    restore(s3, "ongoing")
    s3.put_object(Bucket=BUCKET, Key="plain", Body=b"p")

    def listing(**kwargs: Any) -> dict[str, Any]:
        contents = s3.list_objects_v2(Bucket=BUCKET, **kwargs)["Contents"]
        return {item["Key"]: item.get("RestoreStatus") for item in contents}

    statuses = listing(OptionalObjectAttributes=["RestoreStatus"])
    assert statuses["frozen"] is None
    assert statuses["plain"] is None
    assert statuses["ongoing"] == {"IsRestoreInProgress": True}
    assert statuses["done"]["IsRestoreInProgress"] is False
    expiry = statuses["done"]["RestoreExpiryDate"]
    assert (expiry.hour, expiry.minute, expiry.second) == (0, 0, 0)

    assert set(listing().values()) == {None}  # only on request, as in AWS
    server.set_list_restore_status(False)  # like stock moto: clients must HEAD
    assert set(listing(OptionalObjectAttributes=["RestoreStatus"]).values()) == {None}


def test_counts_every_operation(server: RealisticMotoServer, s3: Any) -> None:
    part = b"p" * (5 * 1024 * 1024)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp", StorageClass="DEEP_ARCHIVE")
    etags = [
        s3.upload_part(
            Bucket=BUCKET, Key="mp", UploadId=upload["UploadId"], PartNumber=n, Body=part
        )["ETag"]
        for n in (1, 2)
    ]
    s3.list_parts(Bucket=BUCKET, Key="mp", UploadId=upload["UploadId"])
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="mp",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in [(1, etags[0]), (2, etags[1])]]
        },
    )
    aborted = s3.create_multipart_upload(Bucket=BUCKET, Key="gone")
    s3.abort_multipart_upload(Bucket=BUCKET, Key="gone", UploadId=aborted["UploadId"])
    s3.put_object(Bucket=BUCKET, Key="small", Body=b"s")
    s3.copy_object(Bucket=BUCKET, Key="small2", CopySource={"Bucket": BUCKET, "Key": "small"})
    s3.head_object(Bucket=BUCKET, Key="small")
    s3.get_object(Bucket=BUCKET, Key="small", Range="bytes=0-0")
    s3.list_objects_v2(Bucket=BUCKET)
    s3.delete_object(Bucket=BUCKET, Key="small2")
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "small"}]})
    s3.head_bucket(Bucket=BUCKET)
    s3.list_buckets()

    assert server.counts() == {
        "CreateMultipartUpload": 2,
        "UploadPart": 2,
        "ListParts": 1,
        "CompleteMultipartUpload": 1,
        "AbortMultipartUpload": 1,
        "PutObject": 1,
        "CopyObject": 1,
        "HeadObject": 1,
        "GetObject": 1,
        "ListObjectsV2": 1,
        "DeleteObject": 1,
        "DeleteObjects": 1,
        "HeadBucket": 1,
        "ListBuckets": 1,
    }
    assert server.key_counts(BUCKET, "mp") == {
        "CreateMultipartUpload": 1,
        "UploadPart": 2,
        "ListParts": 1,
        "CompleteMultipartUpload": 1,
    }
    assert server.events("ListBuckets")[0][1:] == ("ListBuckets", "", "", 200)


def test_concurrent_restores_are_counted_exactly(server: RealisticMotoServer, s3: Any) -> None:
    keys = [f"batch/{i:03d}" for i in range(100)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode(), StorageClass="DEEP_ARCHIVE")
    server.reset_counts()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda key: restore(s3, key), keys))
    assert statuses == [202] * len(keys)
    assert server.counts() == {"RestoreObject": len(keys)}
    assert server.counts_by_key() == {(BUCKET, key): {"RestoreObject": 1} for key in keys}
    assert server.restore_requests(BUCKET, keys[0]) == 1


def test_concurrent_restores_of_one_object_start_one_restore(
    server: RealisticMotoServer, s3: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="hot", Body=b"h", StorageClass="DEEP_ARCHIVE")

    def status(_: int) -> int:
        try:
            return restore(s3, "hot")
        except ClientError as e:
            code: int = e.response["ResponseMetadata"]["HTTPStatusCode"]
            return code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(status, range(16)))
    assert statuses == [202] + [409] * 15
    assert server.restore_requests(BUCKET, "hot") == 16


def test_reset_counts_keeps_objects_and_running_restores(
    server: RealisticMotoServer, s3: Any
) -> None:
    server.set_restore_delay(0.2)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"k", StorageClass="GLACIER")
    restore(s3, "k")
    server.reset_counts()
    assert server.counts() == {}
    assert server.events() == []
    wait_restored(s3, "k")
    assert server.restore_completed_at(BUCKET, "k") is not None
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"k"


def test_reset_wipes_everything(server: RealisticMotoServer, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"k", StorageClass="GLACIER")
    restore(s3, "k")
    server.reset()
    assert server.counts() == {}
    assert server.events() == []
    assert s3.list_buckets()["Buckets"] == []
    assert server.counts() == {"ListBuckets": 1}


def test_100_mib_object_round_trip(server: RealisticMotoServer, s3: Any) -> None:
    server.set_restore_delay(0)
    data = os.urandom(100 * 1024 * 1024)
    s3.put_object(Bucket=BUCKET, Key="big", Body=data, StorageClass="DEEP_ARCHIVE")
    assert restore(s3, "big") == 202
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == data
    tail = s3.get_object(Bucket=BUCKET, Key="big", Range="bytes=-1024")["Body"].read()
    assert tail == data[-1024:]


def test_stop_releases_the_port_and_reaps_the_process() -> None:
    server = RealisticMotoServer(restore_delay=0).start()
    port = server.port
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    started = time.monotonic()
    server.stop()
    server.stop()  # idempotent
    assert time.monotonic() - started < 2
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url


@pytest.mark.parametrize(
    ("method", "path", "query", "copy", "expected"),
    [
        ("GET", "/", "", False, "ListBuckets"),
        ("PUT", "/b", "", False, "CreateBucket"),
        ("HEAD", "/b", "", False, "HeadBucket"),
        ("GET", "/b", "list-type=2&prefix=a", False, "ListObjectsV2"),
        ("GET", "/b", "prefix=a", False, "ListObjects"),
        ("GET", "/b", "uploads", False, "ListMultipartUploads"),
        ("PUT", "/b", "lifecycle", False, "PutBucketLifecycleConfiguration"),
        ("POST", "/b", "delete", False, "DeleteObjects"),
        ("HEAD", "/b/k", "", False, "HeadObject"),
        ("GET", "/b/k", "", False, "GetObject"),
        ("GET", "/b/k", "uploadId=u", False, "ListParts"),
        ("PUT", "/b/k", "", False, "PutObject"),
        ("PUT", "/b/k", "", True, "CopyObject"),
        ("PUT", "/b/k", "partNumber=1&uploadId=u", False, "UploadPart"),
        ("PUT", "/b/k", "partNumber=1&uploadId=u", True, "UploadPartCopy"),
        ("POST", "/b/k", "uploads", False, "CreateMultipartUpload"),
        ("POST", "/b/k", "uploadId=u", False, "CompleteMultipartUpload"),
        ("POST", "/b/k", "restore", False, "RestoreObject"),
        ("DELETE", "/b/k", "uploadId=u", False, "AbortMultipartUpload"),
        ("DELETE", "/b/k", "", False, "DeleteObject"),
        ("GET", "/b/k", "x-id=GetObject", False, "GetObject"),
    ],
)
def test_operation_names(method: str, path: str, query: str, copy: bool, expected: str) -> None:
    from urllib.parse import parse_qs

    bucket, _, key = path.lstrip("/").partition("/")
    assert (
        s3_operation(method, bucket, key, parse_qs(query, keep_blank_values=True), copy) == expected
    )
