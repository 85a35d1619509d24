"""``fastxfer-duplicity``: duplicity, with ``fastxfer+s3://bucket/prefix`` as a target.

Use it exactly like ``duplicity`` (same commands, options and exit codes)::

    fastxfer-duplicity --s3-use-deep-archive /home fastxfer+s3://bucket/backups/home

The scheme is registered when this module is imported, which is what
duplicity's spawned worker processes would need too; duplicity's
``--concurrency`` is refused all the same, because fastxfer uploads volumes
concurrently in one process under one connection budget.  fastxfer's settings
come from ``FASTXFER_*`` variables (see :mod:`fastxfer.duplicity.settings`);
a bad value stops the command before duplicity starts.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Sequence
from typing import Any

import duplicity.backend  # type: ignore[import-untyped, import-not-found, unused-ignore]

from fastxfer.duplicity.settings import SCHEME, BackendSettings
from fastxfer.errors import InvalidConfig

PROG = "fastxfer-duplicity"
EXIT_USAGE = 2

ENGINE_MODULES = (
    "fastxfer.blocking",
    "fastxfer.archive",
    "aiobotocore.session",
    "aiobotocore.client",
    "aiobotocore.config",
    "awscrt.checksums",
)
"""What the backend needs that duplicity does not import (aiohttp, aiobotocore, awscrt
and fastxfer's engine, ~0.3 s): imported beside duplicity's own start (its imports,
the gpg version check), not after it."""


def _import_engine() -> None:
    for name in ENGINE_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            return


def _backend(parsed_url: Any) -> Any:
    """duplicity's factory for ``fastxfer+s3://`` URLs: the backend, imported when needed."""
    from fastxfer.duplicity.backend import FastxferS3Backend

    return FastxferS3Backend(parsed_url)


# At import time: the one piece of global state, and duplicity's only way in.
duplicity.backend.register_backend(SCHEME, _backend)


def refused_option(argv: Sequence[str]) -> str | None:
    """The message for a duplicity option fastxfer does not take, or None.

    duplicity accepts unambiguous abbreviations (``--conc 4``), so those are
    caught too.
    """
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        if len(name) >= 4 and "concurrency".startswith(name):
            return (
                f"{arg.split('=', 1)[0]} is not supported: fastxfer uploads volumes "
                "concurrently itself (tune FASTXFER_SPOOL_VOLUMES and FASTXFER_CONCURRENCY)"
            )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Check fastxfer's options and environment, then run duplicity (which exits)."""
    args = list(sys.argv[1:] if argv is None else argv)
    problem = refused_option(args)
    if problem is None:
        try:
            BackendSettings.from_env()
        except InvalidConfig as exc:
            problem = str(exc)
    if problem is not None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from duplicity.__main__ import dup_run  # type: ignore[import-untyped, import-not-found, unused-ignore]

    threading.Thread(target=_import_engine, name="fastxfer-imports", daemon=True).start()
    sys.argv = [sys.argv[0], *args]
    dup_run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
