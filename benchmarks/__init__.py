"""Benchmarks for fastxfer against other S3 clients.

Run ``python -m benchmarks.run --help`` from the repository root; see
``benchmarks/README.md``.  Layout:

``run.py``        command line, orchestration (server, data sets, interleaved runs)
``workloads.py``  the workload registry (what is transferred)
``peers.py``      the peer registry (who transfers it); each run is a subprocess
``child.py``      the subprocess entry point: runs one peer once, reports JSON
``measure.py``    wall/CPU/RSS measurement of a transfer phase
``report.py``     medians, ratios, target checks, Markdown
``sysinfo.py``    machine and package facts recorded with every result
"""
