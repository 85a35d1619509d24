"""One exception family for everything fastxfer raises.

Every error says what happened and what to do about it.  Errors raised by
botocore and aiohttp are translated by :func:`translate` so callers only ever
need ``except FastxferError``.
"""

from __future__ import annotations

import errno
from typing import Any


class FastxferError(Exception):
    """Root of every error fastxfer raises on purpose.

    ``exit_code`` is the process exit status the CLI uses for it.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class UsageError(FastxferError):
    """Bad command-line or configuration value."""

    exit_code = 2


class InvalidConfig(UsageError, ValueError):
    """A TransferConfig value is out of range or malformed."""


class InvalidS3Url(UsageError):
    """An ``s3://bucket/key`` URL could not be parsed."""


class LocalFileError(FastxferError):
    """A local file is missing, unreadable, or cannot be written."""

    exit_code = 3


class DiskFull(LocalFileError):
    """No space left on the device a download writes to."""


class S3Error(FastxferError):
    """The server refused or failed a request."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
    ) -> None:
        self.code = code
        self.bucket = bucket
        self.key = key
        super().__init__(message, hint=hint)


class NoSuchBucket(S3Error):
    """The bucket does not exist."""


class NoSuchKey(S3Error):
    """The object does not exist."""


class AccessDenied(S3Error):
    """The credentials are valid but not allowed to do this."""


class BadCredentials(S3Error):
    """The server does not recognise the credentials or the signature."""

    exit_code = 5


class NoCredentials(BadCredentials):
    """No credentials were found in the environment, config files or profile."""


class EndpointUnreachable(S3Error):
    """The S3 endpoint could not be reached."""

    exit_code = 6


class Throttled(S3Error):
    """The server kept answering SlowDown after every retry."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        """The server's Retry-After hint, seconds."""
        super().__init__(message, **kw)


class ColdObject(S3Error):
    """The object is in GLACIER or DEEP_ARCHIVE and has no restored copy."""

    exit_code = 7


class IntegrityError(FastxferError):
    """Data did not match its checksum or expected size; nothing was kept."""

    exit_code = 8


class TransferFailed(FastxferError):
    """A transfer failed for a reason not covered by a more specific error."""


THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "503",
        "TooManyRequests",
    }
)
"""Error codes that mean "slow down": always safe to retry after a pause."""


def translate(
    exc: BaseException, *, bucket: str | None = None, key: str | None = None, op: str = ""
) -> FastxferError:
    """Map a botocore/aiohttp/OS exception to the fastxfer family.

    ``op`` is a short description of what was being done ("upload", "HEAD"...).
    """
    if isinstance(exc, FastxferError):
        return exc
    from botocore import exceptions as bce

    where = f"s3://{bucket}/{key}" if bucket and key else (f"s3://{bucket}" if bucket else "S3")
    what = f"{op} {where}".strip()

    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return NoCredentials(
            "no AWS credentials found",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or choose a profile with --profile",
        )
    if isinstance(exc, bce.ProfileNotFound):
        return UsageError(
            f"AWS profile {exc.kwargs.get('profile')!r} not found",
            hint="check --profile / AWS_PROFILE against ~/.aws/config and ~/.aws/credentials",
        )
    if isinstance(exc, bce.SSLError):
        return EndpointUnreachable(
            f"{what}: the TLS handshake failed ({_short(exc)})",
            hint="if the endpoint serves plain HTTP use an http:// URL; for a private CA or a "
            "self-signed certificate set AWS_CA_BUNDLE (or --ca-bundle)",
        )
    if isinstance(exc, bce.ReadTimeoutError):
        return EndpointUnreachable(
            f"{what}: the endpoint did not answer in time ({_short(exc)})",
            hint="check that the server is healthy; a slow link may need a longer read timeout",
        )
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return EndpointUnreachable(
            f"{what}: cannot connect to the endpoint ({exc})",
            hint="check --endpoint-url and that the server is running",
        )
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        msg = str(err.get("Message", "") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f" ({msg})" if msg and msg != code else ""
        kw: dict[str, Any] = {"code": code, "bucket": bucket, "key": key}
        if code in ("NoSuchBucket",):
            return NoSuchBucket(
                f"bucket {bucket!r} does not exist", hint="create it first or check the name", **kw
            )
        if code in ("NoSuchKey",) or (code == "404" and key):
            return NoSuchKey(
                f"{where} does not exist", hint="check the key with `fastxfer ls`", **kw
            )
        if code == "404":
            return NoSuchBucket(
                f"bucket {bucket!r} does not exist", hint="create it first or check the name", **kw
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return BadCredentials(
                f"{what}: the server rejected the credentials ({code})",
                hint="check the access key and secret, or the --profile used",
                **kw,
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403"):
            return AccessDenied(
                f"{what}: access denied{detail}",
                hint="the credentials lack permission for this operation",
                **kw,
            )
        if code in ("InvalidObjectState", "ObjectNotInActiveTierError"):
            return ColdObject(
                f"{where} is in an archive storage class and has not been restored",
                hint=f"run `fastxfer restore s3://{bucket}/{key}` and download it when it thaws",
                **kw,
            )
        if code in THROTTLE_CODES:
            return Throttled(
                f"{what}: the server kept asking to slow down{detail}",
                hint="lower --concurrency or add --tps",
                **kw,
            )
        if code in ("BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"):
            return IntegrityError(f"{what}: the server found a checksum mismatch ({code})")
        return S3Error(f"{what} failed: {code or status}{detail}", **kw)
    if isinstance(exc, OSError):
        full = {
            errno.ENOSPC: "no space left on device",
            errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large (a file size limit)",
        }
        if exc.errno in full:
            return DiskFull(
                f"{full[exc.errno]} writing {exc.filename or 'the download'}",
                hint="free space or choose another destination; nothing partial was kept",
            )
        if isinstance(exc, FileNotFoundError):
            return LocalFileError(f"{exc.filename}: no such file or directory")
        if isinstance(exc, PermissionError):
            return LocalFileError(f"{exc.filename}: permission denied")
        if isinstance(exc, IsADirectoryError):
            return LocalFileError(f"{exc.filename}: is a directory", hint="use --recursive")
        if exc.filename:
            return LocalFileError(f"{exc.filename}: {exc.strerror or exc}")
    return TransferFailed(f"{what} failed: {type(exc).__name__}: {exc}")


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The most telling error of a TaskGroup failure (cancellations last)."""
    import asyncio

    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(group)
    for e in leaves:
        if isinstance(e, FastxferError):
            return e
    for e in leaves:
        if not isinstance(e, asyncio.CancelledError):
            return translate(e) if isinstance(e, Exception) else e
    return leaves[0] if leaves else TransferFailed("transfer failed")
