"""fastxfer: fast, safe S3 transfers for backups.

One asyncio engine (on aiobotocore) runs many concurrent multipart uploads and
ranged downloads under one connection budget and one memory budget.
"""

from fastxfer.config import TransferConfig
from fastxfer.errors import (
    AccessDenied,
    BadCredentials,
    ColdObject,
    DiskFull,
    EndpointUnreachable,
    FastxferError,
    IntegrityError,
    InvalidConfig,
    InvalidS3Url,
    LocalFileError,
    NoCredentials,
    NoSuchBucket,
    NoSuchKey,
    S3Error,
    Throttled,
    TransferFailed,
    UsageError,
)
from fastxfer.manager import ManagerStats, TransferManager
from fastxfer.objectinfo import ObjectInfo
from fastxfer.progress import BaseSubscriber, ProgressEvent, Subscriber
from fastxfer.transfer import TransferHandle, TransferStats
from fastxfer.version import __version__

__all__ = [
    "AccessDenied",
    "BadCredentials",
    "BaseSubscriber",
    "ColdObject",
    "DiskFull",
    "EndpointUnreachable",
    "FastxferError",
    "IntegrityError",
    "InvalidConfig",
    "InvalidS3Url",
    "LocalFileError",
    "ManagerStats",
    "NoCredentials",
    "NoSuchBucket",
    "NoSuchKey",
    "ObjectInfo",
    "ProgressEvent",
    "S3Error",
    "Subscriber",
    "Throttled",
    "TransferConfig",
    "TransferFailed",
    "TransferHandle",
    "TransferManager",
    "TransferStats",
    "UsageError",
    "__version__",
]
