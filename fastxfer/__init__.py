"""fastxfer: fast, safe S3 transfers for backups.

One asyncio engine (on aiobotocore) runs many concurrent multipart uploads and
ranged downloads under one connection budget and one memory budget.
"""

from typing import TYPE_CHECKING, Any

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
from fastxfer.version import __version__

if TYPE_CHECKING:
    from fastxfer.config import TransferConfig
    from fastxfer.manager import ManagerStats, TransferManager
    from fastxfer.objectinfo import ObjectInfo
    from fastxfer.progress import BaseSubscriber, ProgressEvent, Subscriber
    from fastxfer.transfer import TransferHandle, TransferStats

_LAZY = {
    "TransferConfig": "fastxfer.config",
    "ManagerStats": "fastxfer.manager",
    "TransferManager": "fastxfer.manager",
    "ObjectInfo": "fastxfer.objectinfo",
    "BaseSubscriber": "fastxfer.progress",
    "ProgressEvent": "fastxfer.progress",
    "Subscriber": "fastxfer.progress",
    "TransferHandle": "fastxfer.transfer",
    "TransferStats": "fastxfer.transfer",
}


def __getattr__(name: str) -> Any:
    # The engine (aiohttp, aiobotocore, awscrt: ~0.3 s) is imported when first used,
    # so a program that needs only part of fastxfer (the duplicity backend's
    # registration, `fastxfer --version`) starts without it.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastxfer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
