"""A lean parser for ListObjectsV2 pages, inside botocore's request pipeline.

botocore parses every response by walking the service model generically:
~80 ms of CPU for one page of 1,000 keys (the timestamps alone go through
dateutil), so listing 10,000 keys costs most of a second — the largest part
of a ``sync`` that finds nothing to do.  :func:`parse_list_objects_v2` reads
the same page in ~9 ms with ElementTree and builds exactly the dict botocore
would (the same keys, types and flattened lists; ``tests/test_listing.py``
compares the two on real server answers and generated ones).

It runs as botocore's ``before-parse`` hook (:func:`lean_list_objects_v2`), so
everything else stays botocore's: signing, retries and their classification,
error responses (a status >= 300 is never touched), headers, and the
``EncodingType=url`` decoding done after the parse.  A body it does not
recognise is left to botocore.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime
from typing import Any

EVENT = "before-parse.s3.ListObjectsV2"
"""The botocore event :func:`lean_list_objects_v2` is registered on."""

_TOP_TEXT = frozenset(
    {
        "Name",
        "Prefix",
        "Delimiter",
        "EncodingType",
        "ContinuationToken",
        "NextContinuationToken",
        "StartAfter",
    }
)
_TOP_INT = frozenset({"MaxKeys", "KeyCount"})
_OBJECT_TEXT = frozenset({"Key", "ETag", "StorageClass", "ChecksumType"})


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)  # S3: 2026-11-30T07:19:00.000Z
    except ValueError:
        from botocore.utils import parse_timestamp

        stamp: datetime = parse_timestamp(text)
        return stamp


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(node: ET.Element) -> str:
    return node.text if node.text is not None else ""  # <a></a> is "", as botocore reads it


def _children(
    node: ET.Element, parse: Callable[[str, ET.Element, dict[str, Any]], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in node:
        parse(_local(child.tag), child, out)
    return out


def _object_field(name: str, node: ET.Element, out: dict[str, Any]) -> None:
    if name in _OBJECT_TEXT:
        out[name] = _text(node)
    elif name == "Size":
        out[name] = int(_text(node))
    elif name == "LastModified":
        out[name] = _timestamp(_text(node))
    elif name == "ChecksumAlgorithm":
        out.setdefault(name, []).append(_text(node))
    elif name == "Owner":
        out[name] = {k: _text(c) for c in node if (k := _local(c.tag)) in ("ID", "DisplayName")}
    elif name == "RestoreStatus":
        out[name] = _children(node, _restore_field)


def _restore_field(name: str, node: ET.Element, out: dict[str, Any]) -> None:
    if name == "IsRestoreInProgress":
        out[name] = _text(node) == "true"
    elif name == "RestoreExpiryDate":
        out[name] = _timestamp(_text(node))


def _prefix_field(name: str, node: ET.Element, out: dict[str, Any]) -> None:
    if name == "Prefix":
        out[name] = _text(node)


def _top_field(name: str, node: ET.Element, out: dict[str, Any]) -> None:
    if name == "Contents":
        out.setdefault(name, []).append(_children(node, _object_field))
    elif name == "CommonPrefixes":
        out.setdefault(name, []).append(_children(node, _prefix_field))
    elif name in _TOP_TEXT:
        out[name] = _text(node)
    elif name in _TOP_INT:
        out[name] = int(_text(node))
    elif name == "IsTruncated":
        out[name] = _text(node) == "true"


def parse_list_objects_v2(body: bytes) -> dict[str, Any] | None:
    """The fields botocore's parser gives for a ListObjectsV2 page (the body's part;
    None if ``body`` is not a ListBucketResult, for botocore to handle)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if _local(root.tag) != "ListBucketResult":
        return None
    try:
        return _children(root, _top_field)
    except ValueError:  # a number or date botocore would refuse too: let it say so
        return None


def lean_list_objects_v2(
    response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
) -> None:
    """botocore ``before-parse`` hook: parse a 200 page here and hand botocore an empty
    body, so it only adds the header fields and ResponseMetadata."""
    if response_dict.get("status_code") != 200:
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes | bytearray) or not body:
        return
    parsed = parse_list_objects_v2(bytes(body))
    if parsed is None:
        return
    customized_response_dict.update(parsed)
    response_dict["body"] = b""
