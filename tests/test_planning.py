"""Pure logic: part planning, units, config validation, URL parsing."""

from __future__ import annotations

import pytest

from fastxfer import InvalidConfig, InvalidS3Url, TransferConfig
from fastxfer.limits import MAX_PARTS, GiB, MiB, TiB
from fastxfer.planning import download_get_count, fit_part_size, range_size
from fastxfer.s3url import parse_s3_url
from fastxfer.units import parse_rate, parse_size


@pytest.mark.parametrize(
    ("size", "preferred", "expected"),
    [
        (0, 16 * MiB, 16 * MiB),
        (1, 16 * MiB, 16 * MiB),
        (1 * GiB, 16 * MiB, 16 * MiB),
        (1 * GiB, 1 * MiB, 5 * MiB),  # raised to S3's minimum
        (MAX_PARTS * 16 * MiB, 16 * MiB, 16 * MiB),  # exactly 10,000 parts
        (MAX_PARTS * 16 * MiB + 1, 16 * MiB, 17 * MiB),  # one byte more: bigger parts
        (5 * TiB, 16 * MiB, 525 * MiB),  # S3's largest object
    ],
)
def test_fit_part_size(size: int, preferred: int, expected: int) -> None:
    part = fit_part_size(size, preferred)
    assert part == expected
    assert -(-size // part) <= MAX_PARTS


def test_object_above_5tib_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="5 TiB"):
        fit_part_size(5 * TiB + 1, 16 * MiB)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, 1), (1, 1), (8 * MiB - 1, 1), (1 * GiB, 64), (10 * GiB, 160)],
)
def test_download_get_count_matches_range_plan(size: int, expected: int) -> None:
    """The GETs a download makes (what the restore estimate prints), default config."""
    cfg = TransferConfig()
    assert download_get_count(size, cfg) == expected
    if size >= cfg.multipart_threshold:
        assert expected == -(-size // range_size(size, cfg))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16MiB", 16 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("500M", 500 * MiB),  # bare prefixes are binary, as rclone and aws mean them
        ("500MB", 500_000_000),
        ("42", 42),
        ("42B", 42),
        ("8k", 8 * 1024),
        ("8KB", 8000),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "12XB", "-5M", "1..2M", "8Mbit", "8Mbps", "8Mb"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid"):
        parse_size(text)


def test_parse_rate() -> None:
    assert parse_rate("4MiB/s") == 4 * MiB
    assert parse_rate("8M") == 8 * MiB  # rclone's --bwlimit 8M
    assert parse_rate("8MB/s") == 8_000_000
    assert parse_rate("8Mbps") == parse_rate("8Mbit/s") == 1_000_000  # bits, never bytes
    assert parse_rate("100kbit") == 12_500
    assert parse_rate("off") == 0.0
    with pytest.raises(InvalidConfig, match="ambiguous"):
        parse_rate("8Mb")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"part_size": 1 * MiB}, "outside S3's limits"),
        ({"part_size": 6 * GiB}, "outside S3's limits"),
        ({"max_concurrency": 0}, "must be positive"),
        ({"memory_limit": 8 * MiB, "part_size": 16 * MiB}, "smaller than the part size"),
        ({"storage_class": "FROZEN"}, "invalid storage class"),
        ({"checksum": "sha1"}, "invalid checksum mode"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        TransferConfig(**kwargs)  # type: ignore[arg-type]


def test_storage_class_is_canonicalised() -> None:
    assert TransferConfig(storage_class="deep-archive").storage_class == "DEEP_ARCHIVE"


def test_checksum_auto() -> None:
    assert TransferConfig().effective_checksum == "server"
    assert TransferConfig(endpoint_url="http://127.0.0.1:1").effective_checksum == "client"


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [("s3://b1x/k", "b1x", "k"), ("s3://bkt", "bkt", ""), ("s3://bkt/a/b c/é", "bkt", "a/b c/é")],
)
def test_parse_s3_url(url: str, bucket: str, key: str) -> None:
    u = parse_s3_url(url)
    assert (u.bucket, u.key) == (bucket, key)


@pytest.mark.parametrize(
    "url", ["s3:/b/k", "s3://", "http://b/k", "s3://b/k", "s3://bad_bucket!/k"]
)
def test_parse_s3_url_rejects(url: str) -> None:
    with pytest.raises(InvalidS3Url):
        parse_s3_url(url)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-27T09:05:16.000Z",
        "2026-11-27T09:05:16Z",
        "Fri, 27 Nov 2026 09:05:16 GMT",
        "2026-11-27T09:05:16.123456+00:00",
        1700000000,
        "1700000000",
    ],
)
def test_fast_timestamp_parser_agrees_with_botocore(value: object) -> None:
    from botocore.utils import parse_timestamp as botocore_parse

    from fastxfer.session import parse_timestamp

    assert parse_timestamp(value) == botocore_parse(value)


@pytest.mark.parametrize(
    ("size", "concurrency", "part", "expected"),
    [
        (1 * GiB, 16, 16 * MiB, 64 * MiB),  # one range per connection
        (2 * GiB, 16, 16 * MiB, 64 * MiB),  # capped at 64 MiB: 32 ranges
        (160 * MiB, 16, 5 * MiB, 10 * MiB),  # every connection busy over a slow link
        (40 * MiB, 16, 16 * MiB, 5 * MiB),  # every connection busy: 8 ranges of 5 MiB
        (40 * MiB, 64, 16 * MiB, 5 * MiB),  # never below 5 MiB
        (40 * MiB, 2, 16 * MiB, 20 * MiB),  # nor below what keeps 2 connections busy
    ],
)
def test_download_range_size(size: int, concurrency: int, part: int, expected: int) -> None:
    from fastxfer.planning import range_size

    cfg = TransferConfig(max_concurrency=concurrency, part_size=part)
    assert range_size(size, cfg) == expected
    assert range_size(size, cfg.replace(download_part_size=8 * MiB)) == 8 * MiB


@pytest.mark.parametrize(
    ("size", "connections", "expected"),
    [
        (1 * GiB, 64, 16 * MiB),  # a long path: every connection of the budget busy
        (1 * GiB, 8, 64 * MiB),  # a short path (the tuner's 8): 16 ranges of 64 MiB
        (1 * GiB, 200, 16 * MiB),  # never more than the budget
        (40 * MiB, 1, 40 * MiB),  # one connection: one range, up to 64 MiB
        (160 * MiB, 64, 5 * MiB),  # a long path: 32 ranges of 5 MiB, not 10 of part_size
    ],
)
def test_download_ranges_follow_the_connections_allowed(
    size: int, connections: int, expected: int
) -> None:
    cfg = TransferConfig()  # budget 64, part_size 16 MiB
    assert range_size(size, cfg, connections) == expected
    assert download_get_count(size, cfg, connections) == -(-size // expected)
    assert download_get_count(size, cfg, connections) <= download_get_count(size, cfg)
