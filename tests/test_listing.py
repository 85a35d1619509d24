"""The lean ListObjectsV2 parser gives what botocore's parser gives, on real servers too."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import botocore.session
import pytest
from botocore.parsers import RestXMLParser
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from fastxfer import TransferManager
from fastxfer.errors import FastxferError
from fastxfer.listing import lean_list_objects_v2, parse_list_objects_v2
from fastxfer.localserver import LocalS3Server

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "fastxfer-hypothesis"))

_OUTPUT = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectsV2")


def botocore_parse(body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = RestXMLParser().parse(
        {"body": body, "headers": {}, "status_code": 200}, _OUTPUT.output_shape
    )
    parsed.pop("ResponseMetadata", None)
    return parsed


def comparable(value: Any) -> Any:
    """Datetimes as instants (botocore answers in the local zone, the lean parser in UTC)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


# XML 1.0 text: no control characters but tab/newline; ElementTree and botocore agree there.
_xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), max_size=40
)
_stamp = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


@st.composite
def _object(draw: st.DrawFn) -> str:
    parts = [f"<Key>{escape(draw(_xml_text))}</Key>"]
    parts.append(f"<LastModified>{draw(_stamp)}</LastModified>")
    parts.append(
        f"<ETag>&quot;{draw(st.text('0123456789abcdef', min_size=32, max_size=32))}&quot;</ETag>"
    )
    algos = draw(st.lists(st.sampled_from(["CRC32", "CRC64NVME", "SHA256"]), max_size=2))
    parts += [f"<ChecksumAlgorithm>{algo}</ChecksumAlgorithm>" for algo in algos]
    if draw(st.booleans()):
        parts.append("<ChecksumType>FULL_OBJECT</ChecksumType>")
    parts.append(f"<Size>{draw(st.integers(0, 5 << 40))}</Size>")
    parts.append(
        f"<StorageClass>{draw(st.sampled_from(['STANDARD', 'DEEP_ARCHIVE']))}</StorageClass>"
    )
    if draw(st.booleans()):
        parts.append(
            f"<Owner><ID>{escape(draw(_xml_text))}</ID><DisplayName></DisplayName></Owner>"
        )
    if draw(st.booleans()):
        done = draw(st.booleans())
        expiry = f"<RestoreExpiryDate>{draw(_stamp)}</RestoreExpiryDate>" if done else ""
        parts.append(
            f"<RestoreStatus><IsRestoreInProgress>{'false' if done else 'true'}"
            f"</IsRestoreInProgress>{expiry}</RestoreStatus>"
        )
    parts = draw(st.permutations(parts))  # servers order members as they like
    return "<Contents>" + "".join(parts) + "</Contents>"


@st.composite
def _page(draw: st.DrawFn) -> bytes:
    truncated = draw(st.booleans())
    head = [
        "<Name>bench</Name>",
        f"<Prefix>{escape(draw(_xml_text))}</Prefix>",
        f"<KeyCount>{draw(st.integers(0, 1000))}</KeyCount>",
        "<MaxKeys>1000</MaxKeys>",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
    ]
    if truncated:
        head.append(f"<NextContinuationToken>{escape(draw(_xml_text))}</NextContinuationToken>")
    if draw(st.booleans()):
        head += ["<Delimiter>/</Delimiter>", "<EncodingType>url</EncodingType>"]
    if draw(st.booleans()):
        head.append(f"<ContinuationToken>{escape(draw(_xml_text))}</ContinuationToken>")
    prefixes = [
        f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>"
        for p in draw(st.lists(_xml_text, max_size=3))
    ]
    objects = draw(st.lists(_object(), max_size=5))
    ns = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' if draw(st.booleans()) else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult{ns}>'
        + "".join(head + objects + prefixes)
        + "</ListBucketResult>"
    ).encode()


@settings(max_examples=300, deadline=None)
@given(_page())
def test_the_lean_parser_equals_botocores_parser(body: bytes) -> None:
    lean = parse_list_objects_v2(body)
    assert lean is not None
    assert comparable(lean) == comparable(botocore_parse(body))


def test_a_body_that_is_not_a_listing_is_left_to_botocore() -> None:
    for body in (b"", b"<Error><Code>NoSuchBucket</Code></Error>", b"not xml", b"<a><b></a>"):
        assert parse_list_objects_v2(body) is None
    bad_size = b"<ListBucketResult><Contents><Size>x</Size></Contents></ListBucketResult>"
    assert parse_list_objects_v2(bad_size) is None
    error = {"status_code": 404, "body": b"<ListBucketResult/>", "headers": {}}
    custom: dict[str, Any] = {}
    lean_list_objects_v2(error, custom)
    assert (custom, error["body"]) == ({}, b"<ListBucketResult/>")  # errors stay botocore's


async def test_listings_through_the_engine_equal_boto3s(
    rclone_server: LocalS3Server, bucket: str, tm: TransferManager, s3: Any
) -> None:
    # Names that need escaping in XML and in URLs (botocore's EncodingType=url path).
    names = ["plain", "a b/c&d<e>.txt", "ü/ñ%2F+x", "dir/sub/deep", "dir/x", "'quote\"", "t\tab"]
    for i, name in enumerate(names):
        s3.put_object(Bucket=bucket, Key=name, Body=os.urandom(i))
    expected = [
        (o["Key"], o["Size"], o["ETag"], o["LastModified"].timestamp())
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    got = [
        (o.key, o.size, o.etag, o.last_modified.timestamp() if o.last_modified else None)
        async for o in tm.list_objects(bucket)
    ]
    assert got == expected
    assert sorted(k for k, *_ in got) == sorted(names)
    # Delimited: the common prefixes come through the lean parser too.
    top = [(o.key, o.is_prefix) async for o in tm.list_objects(bucket, delimiter="/")]
    assert sorted(top) == sorted(
        [("dir/", True), ("ü/", True), ("a b/", True)] + [(n, False) for n in names if "/" not in n]
    )
    # An error answer is still botocore's to parse and ours to translate.
    with pytest.raises(FastxferError, match=r"NoSuchBucket|does not exist"):
        async for _ in tm.list_objects(bucket + "-missing"):
            pass


async def test_pages_of_a_thousand_continue_through_the_lean_parser(
    rclone_server: LocalS3Server, bucket: str, tm: TransferManager, s3: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"k/{i:05d}" for i in range(2345)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    got = [o.key async for o in tm.list_objects(bucket, "k/")]
    assert got == keys
    since = datetime.now(UTC) - timedelta(hours=1)
    stamps = [o.last_modified async for o in tm.list_objects(bucket, "k/")]
    assert all(t is not None and t > since for t in stamps)
