"""Measurement of the transfer phase inside a peer's process.

A peer wraps exactly its transfer (not imports, not client creation) in
``with phase:``.  The phase records wall time (``perf_counter``) and
``getrusage`` deltas of the process (every thread) and of its waited-for
children (for peers that run a tool such as s5cmd), and samples
``/proc/self/status`` in a thread to tell anonymous memory from mapped files
(``ru_maxrss`` counts both).

Peak RSS is ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``: Linux
carries ``ru_maxrss`` over ``execve`` (the kernel keeps the larger of the old
and the new image's high-water mark), so a child spawned by a 300 MiB
orchestrator reports at least 300 MiB there whatever it does.  ``VmHWM``
belongs to the new address space only.
"""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def cpu_seconds(ru: resource.struct_rusage) -> float:
    return float(ru.ru_utime + ru.ru_stime)


def read_status() -> dict[str, int]:
    """The RSS fields of /proc/self/status in KiB (empty where unavailable)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                key = name.decode()
                if key in STATUS_FIELDS:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


class _Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._stop_event = threading.Event()

    def sample(self) -> None:
        for k, v in read_status().items():
            if v > self.peaks.get(k, -1):
                self.peaks[k] = v

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


@dataclass
class Phase:
    """Context manager around the timed transfer; enter it exactly once."""

    sample_interval: float = 0.05
    """Seconds between /proc/self/status samples; 0 turns the sampler off."""
    wall_s: float | None = None
    cpu_self_s: float | None = None
    cpu_children_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    rss_start_kib: int | None = None
    status_peaks_kib: dict[str, int] = field(default_factory=dict)
    _t0: float = 0.0
    _ru_self: Any = None
    _ru_children: Any = None
    _sampler: _Sampler | None = None
    _entered: bool = False

    def __enter__(self) -> Phase:
        if self._entered:
            raise RuntimeError("the transfer phase may be entered only once")
        self._entered = True
        self.rss_start_kib = read_status().get("VmRSS")
        if self.sample_interval > 0:
            self._sampler = _Sampler(self.sample_interval)
            self._sampler.sample()
            self._sampler.start()
        self._ru_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._ru_self = resource.getrusage(resource.RUSAGE_SELF)
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        t1 = time.perf_counter()
        ru_self = resource.getrusage(resource.RUSAGE_SELF)
        ru_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall_s = t1 - self._t0
        self.cpu_self_s = cpu_seconds(ru_self) - cpu_seconds(self._ru_self)
        self.cpu_children_s = cpu_seconds(ru_children) - cpu_seconds(self._ru_children)
        self.user_s = (ru_self.ru_utime - self._ru_self.ru_utime) + (
            ru_children.ru_utime - self._ru_children.ru_utime
        )
        self.sys_s = (ru_self.ru_stime - self._ru_self.ru_stime) + (
            ru_children.ru_stime - self._ru_children.ru_stime
        )
        if self._sampler is not None:
            self._sampler.stop()
            self.status_peaks_kib = dict(self._sampler.peaks)

    @property
    def done(self) -> bool:
        return self.wall_s is not None

    def as_dict(self) -> dict[str, Any]:
        if not self.done:
            raise RuntimeError("the peer never entered its transfer phase")
        return {
            "wall_s": self.wall_s,
            "cpu_s": (self.cpu_self_s or 0.0) + (self.cpu_children_s or 0.0),
            "cpu_self_s": self.cpu_self_s,
            "cpu_children_s": self.cpu_children_s,
            "user_s": self.user_s,
            "sys_s": self.sys_s,
            "rss_start_kib": self.rss_start_kib,
            "status_peaks_kib": self.status_peaks_kib,
        }


def process_totals() -> dict[str, Any]:
    """Whole-process CPU and peak RSS so far.

    ``peak_rss_kib`` is this process's VmHWM (see the module docstring).  For
    peers that run a tool, the tool's peak is ``maxrss_children_kib``
    (``ru_maxrss`` of waited-for children: inflated to this process's RSS at
    spawn time at least, for the same execve reason).
    """
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    hwm = read_status().get("VmHWM")
    return {
        "cpu_s": cpu_seconds(s) + cpu_seconds(c),
        "peak_rss_kib": hwm if hwm is not None else s.ru_maxrss,
        "peak_rss_source": "VmHWM" if hwm is not None else "ru_maxrss (inherits the parent's)",
        "maxrss_self_kib": s.ru_maxrss,
        "maxrss_children_kib": c.ru_maxrss,
    }
