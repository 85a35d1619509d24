"""``-v`` / ``--log-level``: request-level logs on stderr, with secrets redacted.

``-v`` logs each request sent (method, URL, headers; botocore's and the lean
path's, fastxfer/leanpath.py) and fastxfer's
own messages; ``-vv`` (``--log-level debug``) everything botocore logs,
including the canonical request and the string to sign.  Every line goes
through :func:`redact` first: the ``Authorization`` header, signatures
(``Signature=``, ``X-Amz-Signature``, botocore's ``Signature:`` line),
``X-Amz-Security-Token`` / session tokens, ``aws_secret_access_key``, and the
literal secret key and session token of this process (from the environment
or the config) never reach the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import TextIO

REDACTED = "<redacted>"

_SECRET_NAMES = (
    r"authorization|x-amz-security-token|x-amz-signature|x-amz-credential|"
    r"aws_secret_access_key|aws_session_token|aws_security_token|secretaccesskey|"
    r"sessiontoken|x-amz-server-side-encryption-customer-key(?:-md5)?"
)
# 'Authorization': b'AWS4-HMAC-SHA256 Credential=..., Signature=...'  (a repr'd dict)
_QUOTED = re.compile(rf"""(?i)(['"]?\b(?:{_SECRET_NAMES})\b['"]?\s*[:=]\s*b?)(['"])(.*?)(\2)""")
# X-Amz-Signature=abc&...   x-amz-security-token:VALUE   aws_secret_access_key = VALUE
_BARE = re.compile(rf"(?i)(\b(?:{_SECRET_NAMES})\b\s*[:=]\s*)(?!['\"<])([^\s'\"&,;}}>]+)")
# Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...
_AUTH_LINE = re.compile(r"(?i)(\bauthorization\s*:\s*)(?!<redacted>)([^\n'\"}]+)")
_SIGNATURE = re.compile(r"(?i)(\bsignature\s*[=:]\s*)([0-9a-f]{16,})")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials and signatures replaced by ``<redacted>``."""
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    text = _QUOTED.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(4)}", text)
    text = _AUTH_LINE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BARE.sub(lambda m: m.group(1) + REDACTED, text)
    return _SIGNATURE.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """Formats a record (message, arguments, traceback), then redacts the result."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


_REQUEST_LOGGERS = (
    "botocore.endpoint",
    "botocore.retryhandler",
    "botocore.retries",
    "fastxfer.request",
)
_LEVELS = {"debug": 2, "info": 1, "warning": 0, "error": -1}


def verbosity(args: argparse.Namespace) -> int:
    """-1 (errors only) to 2 (everything); 0 when neither -v nor --log-level was given."""
    level = getattr(args, "log_level", None)
    if level == "error":
        return -1
    return max(int(getattr(args, "verbose", 0) or 0), _LEVELS[level] if level else 0)


def configure_logging(
    args: argparse.Namespace, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> logging.Handler | None:
    """Send the logs ``-v`` / ``--log-level`` ask for to ``stream`` (stderr), redacted.

    Nothing is changed without those flags.  Returns the handler installed.
    """
    v = verbosity(args)
    if not getattr(args, "verbose", 0) and getattr(args, "log_level", None) is None:
        return None
    known = [*secrets]
    known += [os.environ.get(n, "") for n in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(known))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    fastxfer = logging.getLogger("fastxfer")
    if v < 0:
        fastxfer.setLevel(logging.ERROR)
    elif v == 0:
        fastxfer.setLevel(logging.WARNING)
    elif v == 1:
        fastxfer.setLevel(logging.INFO)
        for name in _REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
    else:
        for name in ("fastxfer", "botocore", "aiobotocore"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    return handler
