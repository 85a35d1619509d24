"""One run of one peer, in its own process: ``python -m benchmarks.child < job.json``.

Reads a :class:`~benchmarks.peers.Job` as JSON on stdin, runs the peer, and
writes the measurements as JSON to ``job.result_path``.  The parent adds what
only it can see (the whole process's CPU including interpreter start-up and
shutdown, the server's CPU) and checks the bytes.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

from benchmarks.measure import Phase, process_totals


def main() -> int:
    t_start = time.perf_counter()
    from benchmarks.peers import Job, make_peer

    job = Job.from_json(sys.stdin.read())
    out: dict[str, Any] = {"peer": job.peer, "pid": os.getpid()}
    phase = Phase(sample_interval=job.sample_interval)
    code = 0
    try:
        peer = make_peer(job.peer, job.settings)
        out["extra"] = peer.run(job, phase)
        out["phase"] = phase.as_dict()
        out["ok"] = True
    except BaseException as exc:
        out["ok"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
        if phase.done:
            out["phase"] = phase.as_dict()
        code = 1
    out["process"] = process_totals()
    out["process"]["wall_s"] = time.perf_counter() - t_start
    tmp = job.result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, default=repr)
    os.replace(tmp, job.result_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
