"""TransferConfig: every knob of a TransferManager, frozen and validated."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastxfer.errors import InvalidConfig
from fastxfer.limits import MAX_PART_SIZE, MIN_PART_SIZE, GiB, MiB
from fastxfer.units import parse_count, parse_rate, parse_size

if TYPE_CHECKING:
    from fastxfer.bandwidth import BandwidthSettings

ChecksumMode = Literal["auto", "server", "client", "md5", "off"]
"""How integrity is ensured (see README "Integrity"):

``server``
    CRC64NVME flexible checksums on every part and a FULL_OBJECT CRC64NVME on
    completion; the server verifies them (AWS S3, MinIO, moto).
``client``
    A CRC64NVME of the whole object is computed before the upload and stored as
    user metadata ``fastxfer-crc64nvme``; every download recomputes it before
    the file is renamed into place.  Works on any server that keeps user
    metadata (rclone serve s3 verifies nothing but Content-MD5).  Sources that
    cannot be read twice (async iterables) fall back to Content-MD5 per part.
``md5``
    Content-MD5 on every request, verified by the server; costs ~1.7 s of CPU
    per GiB.
``off``
    Nothing beyond TCP and the size check.
``auto``
    ``server`` for AWS (no ``endpoint_url``), ``client`` for any other endpoint,
    including one :meth:`TransferConfig.from_env` found in ``AWS_ENDPOINT_URL_S3``
    or ``AWS_ENDPOINT_URL``.
"""

STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER_IR",
        "GLACIER",
        "DEEP_ARCHIVE",
        "REDUCED_REDUNDANCY",
        "EXPRESS_ONEZONE",
    }
)


def validate_storage_class(name: str) -> str:
    """Return the canonical storage class name or raise InvalidConfig."""
    canon = name.strip().upper().replace("-", "_")
    if canon not in STORAGE_CLASSES:
        raise InvalidConfig(
            f"invalid storage class {name!r}",
            hint="choose one of " + ", ".join(sorted(STORAGE_CLASSES)),
        )
    return canon


@dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """Settings for a :class:`~fastxfer.TransferManager`.

    Sizes are bytes, times are seconds.  Example::

        TransferConfig(endpoint_url="http://127.0.0.1:9000", max_concurrency=32,
                       part_size=16 * MiB, memory_limit=512 * MiB)
    """

    endpoint_url: str | None = None
    """S3 endpoint; None means AWS S3 for ``region``."""
    region: str | None = None
    """Region; defaults to the profile's region, else us-east-1."""
    profile: str | None = None
    """AWS profile from ~/.aws/config; None uses the standard credential chain."""
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    """None: path-style for custom endpoints, auto for AWS."""
    verify_tls: bool | str = True
    """False to skip TLS verification, or a CA bundle path."""

    max_concurrency: int = 64
    """Connection budget: requests in flight at once, over every transfer."""
    autotune: bool = True
    """Tune the requests in flight (up to ``max_concurrency``) from measured goodput:
    shed connections that add nothing, keep those that pay (fastxfer/tuning.py).
    False: always ``max_concurrency`` (a ``--concurrency N`` flag, ``FASTXFER_CONCURRENCY``
    or the AWS config's ``max_concurrent_requests`` pins it so)."""
    lean_path: bool = True
    """Send PutObject, UploadPart, GetObject and HeadObject signed with awscrt over
    the client's own connections, without botocore's per-call pipeline (~0.5 ms of
    CPU a request saved; fastxfer/leanpath.py).  False: every call through botocore."""
    max_active_transfers: int | None = None
    """Objects transferring at once (None: same as max_concurrency)."""
    multipart_threshold: int = 16 * MiB
    """Objects at or above this size use multipart upload / ranged GETs."""
    part_size: int = 16 * MiB
    """Largest upload part; raised automatically to fit 10,000 parts, lowered (5 MiB
    at least) for a file that would have fewer parts than the connections allowed
    when its upload starts (:func:`fastxfer.planning.upload_part_size`)."""
    download_part_size: int | None = None
    """Bytes per ranged GET; None: enough ranges for every connection allowed when the
    download starts (the tuned count), as large as that allows (5 MiB to 64 MiB;
    fewer, larger ranges cost both sides less CPU)."""
    memory_limit: int = 512 * MiB
    """Upper bound on part buffers held in memory at once."""
    io_chunk_size: int = 1 * MiB
    """Chunk in which downloads are read from the socket and written to disk."""

    checksum: ChecksumMode = "auto"
    storage_class: str | None = None
    """Storage class for uploads (None: the bucket default, STANDARD)."""

    max_attempts: int = 5
    """Attempts per request in botocore and per part/range in fastxfer."""
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    """Seconds without progress (no byte received, or none of a body sent) before a
    request attempt is given up and sent again on a new connection.  S3 itself drops
    a connection idle for ~20 s; a silent endpoint fails after one such timeout."""
    abort_timeout: float = 30.0
    """How long an AbortMultipartUpload may take during cleanup."""
    fsync: bool = True
    """fsync downloaded files before renaming them into place."""
    preserve_mtime: bool = True
    """Store a file's mtime as user metadata ``mtime`` on upload (rclone's convention)
    and set it on the downloaded file (else the object's LastModified)."""
    copy_threshold: int = 5 * GiB
    """Server-side copies of objects above this size use concurrent UploadPartCopy;
    up to it, one CopyObject (S3's limit for CopyObject is 5 GiB)."""
    resume: bool = True
    """Journal multipart uploads from local files in the state file, so the same
    upload after a crash or ``kill -9`` sends only the parts the server lacks."""
    state_path: str | None = None
    """The sqlite state file (upload journal); None: under the user cache directory."""

    bwlimit: float = 0.0
    """Cap on bytes/s over all transfers, both directions (0 = unlimited)."""
    bwlimit_up: float = 0.0
    """Cap on upload bytes/s (0 = unlimited)."""
    bwlimit_down: float = 0.0
    """Cap on download bytes/s (0 = unlimited)."""
    bwlimit_per_connection: float = 0.0
    """Cap on bytes/s of each connection (0 = unlimited)."""
    bwlimit_schedule: str | None = None
    """Weekly timetable for the total cap, e.g. ``"Mon-Fri 08:00-18:00 4MiB/s, otherwise off"``."""
    tps: float = 0.0
    """Requests per second over every request kind (0 = unlimited)."""
    tps_burst: int = 0
    """Requests allowed at once above the rate (0: same as ``tps``, at least 1)."""
    adaptive: bool = True
    """Halve the request limit on SlowDown and climb back while requests succeed."""
    throttle_timeout: float = 600.0
    """How long fastxfer keeps backing off and retrying a request the server throttles."""

    extra_client_kwargs: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def positive(name: str, value: float) -> None:
            if value <= 0:
                raise InvalidConfig(f"{name} must be positive, got {value}")

        positive("max_concurrency", self.max_concurrency)
        if self.max_concurrency > 1024:
            raise InvalidConfig(f"max_concurrency {self.max_concurrency} is above the 1024 limit")
        if self.max_active_transfers is not None:
            positive("max_active_transfers", self.max_active_transfers)
        positive("multipart_threshold", self.multipart_threshold)
        positive("io_chunk_size", self.io_chunk_size)
        positive("connect_timeout", self.connect_timeout)
        positive("read_timeout", self.read_timeout)
        positive("abort_timeout", self.abort_timeout)
        positive("max_attempts", self.max_attempts)
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise InvalidConfig(
                f"part size {self.part_size} is outside S3's limits",
                hint="use a value between 5 MiB and 5 GiB",
            )
        if self.download_part_size is not None and not (
            MIN_PART_SIZE <= self.download_part_size <= MAX_PART_SIZE
        ):
            raise InvalidConfig(
                f"download part size {self.download_part_size} is outside 5 MiB - 5 GiB"
            )
        if self.memory_limit < self.part_size:
            raise InvalidConfig(
                f"memory limit {self.memory_limit} is smaller than the part size {self.part_size}",
                hint="raise --memory-limit or lower --part-size",
            )
        if self.memory_limit > 64 * GiB:
            raise InvalidConfig(f"memory limit {self.memory_limit} is above 64 GiB")
        if self.checksum not in ("auto", "server", "client", "md5", "off"):
            raise InvalidConfig(
                f"invalid checksum mode {self.checksum!r}",
                hint="choose auto, server, client, md5 or off",
            )
        for name in ("bwlimit", "bwlimit_up", "bwlimit_down", "bwlimit_per_connection", "tps"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or math.isnan(value):
                raise InvalidConfig(f"{name} must be a non-negative number, got {value!r}")
        if self.tps_burst < 0:
            raise InvalidConfig(f"tps_burst must not be negative, got {self.tps_burst}")
        positive("throttle_timeout", self.throttle_timeout)
        if self.endpoint_url is not None:
            _check_endpoint_url(self.endpoint_url)
        if not MIN_PART_SIZE <= self.copy_threshold <= MAX_PART_SIZE:
            raise InvalidConfig(
                f"copy threshold must be between 5 MiB and 5 GiB, got {self.copy_threshold}"
            )
        if self.bwlimit_schedule is not None:
            from fastxfer.bandwidth import Schedule

            Schedule.parse(self.bwlimit_schedule)  # raises InvalidConfig on a bad timetable
        if self.storage_class is not None:
            object.__setattr__(self, "storage_class", validate_storage_class(self.storage_class))

    @property
    def active_transfers(self) -> int:
        return self.max_active_transfers or self.max_concurrency

    @property
    def effective_checksum(self) -> Literal["server", "client", "md5", "off"]:
        if self.checksum == "auto":
            return "server" if self.endpoint_url is None else "client"
        return self.checksum

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TransferConfig:
        """A config from the environment, with ``overrides`` (field values) on top.

        The one place that reads fastxfer's environment variables; the
        ``fastxfer`` command builds its config as ``from_env(**flags_given)``,
        so the precedence is flags > environment > defaults.  Unset or empty
        variables are ignored.  ``environ`` defaults to ``os.environ``.

        | variable | field | value (default) |
        |---|---|---|
        | `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` | `endpoint_url` | URL (unset: AWS) |
        | `AWS_PROFILE` | `profile` | profile in ~/.aws/config |
        | `FASTXFER_CONCURRENCY` | `max_concurrency` | requests in flight, 1-1024 (64, tuned); |
        |  |  | setting it pins the count (``autotune`` off) |
        | `FASTXFER_AUTOTUNE` | `autotune` | on, off: tune requests in flight (on) |
        | `FASTXFER_LEAN_PATH` | `lean_path` | on, off: hot requests skip botocore's pipeline (on) |
        | `FASTXFER_PART_SIZE` | `part_size` | size, 5MiB-5GiB (16MiB) |
        | `FASTXFER_MULTIPART_THRESHOLD` | `multipart_threshold` | size (16MiB) |
        | `FASTXFER_MEMORY_LIMIT` | `memory_limit` | size, up to 64GiB (512MiB) |
        | `FASTXFER_CHECKSUM` | `checksum` | auto, server, client, md5, off (auto) |
        | `FASTXFER_STORAGE_CLASS` | `storage_class` | STANDARD, DEEP_ARCHIVE, ... |
        | `FASTXFER_BWLIMIT` | `bwlimit` | rate over all transfers (off), or a timetable |
        | `FASTXFER_BWLIMIT_UP` | `bwlimit_up` | rate of uploads (off) |
        | `FASTXFER_BWLIMIT_DOWN` | `bwlimit_down` | rate of downloads (off) |
        | `FASTXFER_BWLIMIT_PER_CONNECTION` | `bwlimit_per_connection` | rate (off) |
        | `FASTXFER_BWLIMIT_SCHEDULE` | `bwlimit_schedule` | weekly timetable (none) |
        | `FASTXFER_TPS` | `tps` | requests per second (off) |
        | `FASTXFER_RESUME` | `resume` | on, off: journal multipart uploads to resume them (on) |
        | `FASTXFER_STATE` | `state_path` | the sqlite state file (user cache dir) |

        Sizes take units (``8MiB``, ``500M``, ``1.5GiB``), rates too (``4MiB/s``,
        ``800K``, ``off``); a timetable reads ``Mon-Fri 08:00-18:00 4MiB/s, otherwise
        off``.  A bad value raises :class:`~fastxfer.InvalidConfig` naming the
        variable (``FASTXFER_CONCURRENCY: invalid value '0': ...``).
        Credentials are not read here: botocore's chain reads them.

        Below the environment come the AWS CLI's S3 settings in the profile's
        ``s3`` section of ``~/.aws/config`` (``AWS_CONFIG_FILE``):
        ``max_concurrent_requests``, ``multipart_chunksize``,
        ``multipart_threshold`` and ``max_bandwidth``, with the AWS CLI's units
        (``8MB`` there is 8 MiB).  Precedence: flags > environment > config file
        > defaults.  A concurrency given in any of these places is kept as it is
        (``autotune=False``) unless ``FASTXFER_AUTOTUNE`` or an override says otherwise.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"TransferConfig has no field {', '.join(unknown)}")
        values: dict[str, Any] = {}
        sources: dict[str, tuple[str, str]] = {}  # field -> (variable, raw value)
        for variable, field_name, field_parser in _ENVIRONMENT:
            raw = env.get(variable, "").strip()
            name, parse = field_name, field_parser
            if variable == "FASTXFER_BWLIMIT" and is_timetable(raw):
                name, parse = "bwlimit_schedule", _text  # as rclone's --bwlimit takes one
            if not raw or name in overrides or name in values:
                continue
            try:
                values[name] = parse(raw)
            except InvalidConfig as exc:
                raise InvalidConfig(f"{variable}: {exc.message}", hint=exc.hint) from None
            sources[name] = (variable, raw)
        # Below the environment: the s3 section of the profile in ~/.aws/config.
        profile = overrides.get("profile") or values.get("profile")
        for name, (where, raw, parse) in aws_s3_settings(env, profile).items():
            if name in overrides or name in values:
                continue
            try:
                values[name] = parse(raw)
            except InvalidConfig as exc:
                raise InvalidConfig(f"{where}: {exc.message}", hint=exc.hint) from None
            sources[name] = (where, raw)
        if (
            "autotune" not in overrides
            and "autotune" not in values
            and ("max_concurrency" in overrides or "max_concurrency" in values)
        ):
            values["autotune"] = False  # a count the user chose is kept, not tuned
        try:
            return cls(**values, **overrides)
        except InvalidConfig as exc:
            culprits = _culprits(cls, values, overrides, sources)
            if not culprits:
                raise
            variables = ", ".join(variable for variable, _ in culprits)
            what = f"value {culprits[0][1]!r}" if len(culprits) == 1 else "combination"
            raise InvalidConfig(
                f"{variables}: invalid {what}: {exc.message}", hint=exc.hint
            ) from None

    def bandwidth_settings(self) -> BandwidthSettings:
        from fastxfer.bandwidth import BandwidthSettings, Schedule

        return BandwidthSettings(
            total=self.bwlimit,
            up=self.bwlimit_up,
            down=self.bwlimit_down,
            per_connection=self.bwlimit_per_connection,
            schedule=Schedule.parse(self.bwlimit_schedule) if self.bwlimit_schedule else None,
        )

    @property
    def bandwidth_limited(self) -> bool:
        return bool(
            self.bwlimit
            or self.bwlimit_up
            or self.bwlimit_down
            or self.bwlimit_per_connection
            or self.bwlimit_schedule
        )

    def replace(self, **changes: object) -> TransferConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _text(raw: str) -> str:
    return raw


def _whole_number(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidConfig(f"invalid number {raw!r}", hint="use a whole number, e.g. 32") from None


def _check_endpoint_url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            and (parts.port is None or parts.port > 0)
            and not any(c.isspace() for c in url)
        )
    except ValueError:  # a port that is not a number, an unbalanced [
        ok = False
    if not ok:
        shown = url if len(url) <= 80 else url[:77] + "..."
        raise InvalidConfig(
            f"endpoint URL {shown!r} is not an http:// or https:// URL with a host",
            hint="write it as http://HOST:PORT or https://HOST",
        )


_TIMETABLE = re.compile(r"\d:\d\d")


def is_timetable(value: str) -> bool:
    """Whether a ``--bwlimit`` / ``FASTXFER_BWLIMIT`` value is a timetable (it has a
    time of day: ``"08:00,512K 12:00,10M 23:00,off"``) rather than one rate."""
    return bool(_TIMETABLE.search(value))


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InvalidConfig(f"invalid value {raw!r}", hint="use on or off")


_ENVIRONMENT: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    # (variable, field, parser); the first variable set wins for a field.
    ("AWS_ENDPOINT_URL_S3", "endpoint_url", _text),
    ("AWS_ENDPOINT_URL", "endpoint_url", _text),
    ("AWS_PROFILE", "profile", _text),
    ("FASTXFER_CONCURRENCY", "max_concurrency", _whole_number),
    ("FASTXFER_AUTOTUNE", "autotune", _boolean),
    ("FASTXFER_LEAN_PATH", "lean_path", _boolean),
    ("FASTXFER_PART_SIZE", "part_size", parse_size),
    ("FASTXFER_MULTIPART_THRESHOLD", "multipart_threshold", parse_size),
    ("FASTXFER_MEMORY_LIMIT", "memory_limit", parse_size),
    ("FASTXFER_CHECKSUM", "checksum", str.lower),
    ("FASTXFER_STORAGE_CLASS", "storage_class", _text),
    ("FASTXFER_BWLIMIT", "bwlimit", parse_rate),
    ("FASTXFER_BWLIMIT_UP", "bwlimit_up", parse_rate),
    ("FASTXFER_BWLIMIT_DOWN", "bwlimit_down", parse_rate),
    ("FASTXFER_BWLIMIT_PER_CONNECTION", "bwlimit_per_connection", parse_rate),
    ("FASTXFER_BWLIMIT_SCHEDULE", "bwlimit_schedule", _text),
    ("FASTXFER_TPS", "tps", lambda raw: parse_count(raw, what="requests per second")),
    ("FASTXFER_RESUME", "resume", _boolean),
    ("FASTXFER_STATE", "state_path", _text),
)


def _aws_size(raw: str) -> int:
    """A size as the AWS CLI reads it: KB/MB/GB/TB are powers of 1024 there."""
    return parse_size(_aws_units(raw))


def _aws_rate(raw: str) -> float:
    return parse_rate(_aws_units(raw))


def _aws_units(raw: str) -> str:
    return re.sub(r"(?i)([kmgt])b\b", r"\1iB", raw.strip())


_AWS_S3_KEYS: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("max_concurrent_requests", "max_concurrency", _whole_number),
    ("multipart_chunksize", "part_size", _aws_size),
    ("multipart_threshold", "multipart_threshold", _aws_size),
    ("max_bandwidth", "bwlimit", _aws_rate),
)


def aws_s3_settings(
    env: Mapping[str, str], profile: str | None
) -> dict[str, tuple[str, str, Callable[[str], object]]]:
    """Field -> (where, raw value, parser) from the profile's ``s3`` section of the AWS
    config file; {} when there is none.  An unreadable file is ignored, as aws does."""
    path = env.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
    if not os.path.isfile(path):
        return {}
    from botocore.configloader import load_config

    try:
        profiles = load_config(path).get("profiles", {})
    except Exception:  # botocore's own parse errors surface when it loads the file itself
        return {}
    name = profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    section = profiles.get(name, {}).get("s3")
    if not isinstance(section, dict):
        return {}
    out: dict[str, tuple[str, str, Callable[[str], object]]] = {}
    for key, field_name, parse in _AWS_S3_KEYS:
        raw = section.get(key)
        if isinstance(raw, str) and raw.strip():
            out[field_name] = (f"{path} [{name}] s3.{key}", raw, parse)
    return out


def _culprits(
    cls: type[TransferConfig],
    values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    sources: Mapping[str, tuple[str, str]],
) -> list[tuple[str, str]]:
    """The environment variables that make a config invalid ([] if the overrides do)."""

    def valid(**fields: Any) -> bool:
        try:
            cls(**fields, **overrides)
        except InvalidConfig:
            return False
        return True

    if not sources or not valid():
        return []
    alone = [src for name, src in sources.items() if not valid(**{name: values[name]})]
    return alone or list(sources.values())
