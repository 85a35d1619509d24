"""S3 protocol limits, in one place.

Source: https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
"""

from __future__ import annotations

from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB

MIN_PART_SIZE: Final = 5 * MiB
"""Smallest part S3 accepts, except for the last part of an upload."""
MAX_PART_SIZE: Final = 5 * GiB
"""Largest part (and largest single PUT)."""
MAX_PARTS: Final = 10_000
"""Most parts one multipart upload may have."""
MAX_OBJECT_SIZE: Final = 5 * TiB
"""Largest object S3 stores."""
MAX_SINGLE_PUT: Final = 5 * GiB
"""Largest object one PutObject may create."""
MAX_DELETE_BATCH: Final = 1000
"""Most keys one DeleteObjects request may name."""
MAX_LIST_PAGE: Final = 1000
"""Most keys one ListObjectsV2 page returns."""
