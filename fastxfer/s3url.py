"""``s3://bucket/key`` URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastxfer.errors import InvalidS3Url

# Bucket naming rules: https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
# 3-63 characters: lower-case letters, digits, dots and hyphens, beginning and
# ending with a letter or digit, no two dots in a row.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        """True for ``s3://bucket`` or a key ending in '/'."""
        return self.key == "" or self.key.endswith("/")


def is_s3_url(text: str) -> bool:
    return text.lower().startswith("s3:")


def parse_s3_url(text: str) -> S3Url:
    if not text.startswith("s3://"):
        raise InvalidS3Url(f"malformed S3 URL {text!r}", hint="write it as s3://bucket/key")
    rest = text[5:]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidS3Url(f"S3 URL {text!r} has no bucket", hint="write it as s3://bucket/key")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidS3Url(
            f"invalid bucket name {bucket!r} in {text!r}",
            hint="bucket names use 3-63 lower-case letters, digits, dots and hyphens, "
            "and begin and end with a letter or digit",
        )
    return S3Url(bucket, key)
