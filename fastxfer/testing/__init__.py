"""Test doubles and test servers for fastxfer's own tests and benchmarks.

Nothing in the engine imports this package.
"""

from fastxfer.testing.clock import FakeClock

__all__ = ["FakeClock"]
