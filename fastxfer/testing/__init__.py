"""Test doubles for fastxfer's own tests and benchmarks.

Nothing in the engine imports this package.  (The Glacier-like S3 server the
restore tests run against is :mod:`fastxfer.coldserver`: the CLI's
``demo --cold`` uses it too.)
"""

from fastxfer.testing.clock import FakeClock

__all__ = ["FakeClock"]
