"""Medians, ratios, target checks and the Markdown report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

GIB = 2**30
MIB = 2**20

METRICS: dict[str, str] = {
    "wall_s": "wall time of the transfer phase, s",
    "mb_s": "throughput, decimal MB (1e6 bytes) per second of the transfer phase",
    "cpu_transfer_s_per_gib": (
        "client CPU (user+sys, all threads and children) in the transfer phase, s/GiB"
    ),
    "user_s_per_gib": "user part of the transfer-phase client CPU, s/GiB",
    "sys_s_per_gib": "kernel part of the transfer-phase client CPU, s/GiB",
    "cpu_process_s_per_gib": (
        "client CPU of the whole process (start-up, imports, set-up, transfer, exit), s/GiB"
    ),
    "server_cpu_s_per_gib": "server CPU during the whole client process, s/GiB",
    "other_cpu_s": "CPU used by anything else on the machine during the run, s (noise)",
    "peak_rss_mib": "peak RSS of the client process (VmHWM: anonymous + mapped files), MiB",
    "peak_rss_anon_mib": "peak anonymous RSS sampled every 50 ms (no mapped files), MiB",
}


def derive(run: dict[str, Any]) -> None:
    """Add the per-GiB and MB/s figures to a raw run record (in place)."""
    if not run.get("ok"):
        return
    b = run["bytes"]
    gib = b / GIB if b else float("nan")
    run["mb_s"] = b / run["wall_s"] / 1e6 if run["wall_s"] else None
    run["cpu_transfer_s_per_gib"] = run["cpu_transfer_s"] / gib
    if run.get("user_s") is not None and run.get("sys_s") is not None:
        run["user_s_per_gib"] = run["user_s"] / gib
        run["sys_s_per_gib"] = run["sys_s"] / gib
    run["cpu_process_s_per_gib"] = run["cpu_process_s"] / gib
    srv = run.get("server_cpu_s")
    run["server_cpu_s_per_gib"] = srv / gib if srv is not None else None


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def stat(values: list[float | None]) -> Stat | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Stat(statistics.median(vals), min(vals), max(vals), len(vals))


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{workload: {peer: {metric: Stat-dict, "runs": n, "failed": n}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["workload"], {}).setdefault(r["peer"], {"_runs": []})["_runs"].append(r)
    for peers in out.values():
        for name, entry in peers.items():
            rs = entry.pop("_runs")
            ok = [r for r in rs if r.get("ok")]
            entry["runs"] = len(rs)
            entry["failed"] = len(rs) - len(ok)
            entry["bytes"] = ok[0]["bytes"] if ok else None
            entry["files"] = ok[0]["files"] if ok else None
            for m in METRICS:
                s = stat([r.get(m) for r in ok])
                entry[m] = s.as_dict() if s else None
            peers[name] = entry
    return out


def ratio(summary: dict[str, Any], workload: str, peer: str, baseline: str) -> float | None:
    try:
        a = summary[workload][peer]["mb_s"]["median"]
        b = summary[workload][baseline]["mb_s"]["median"]
    except (KeyError, TypeError):
        return None
    return a / b if b else None


# -- targets (issue 2) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def _get(summary: dict[str, Any], workload: str, peer: str, metric: str) -> float | None:
    try:
        v = summary[workload][peer][metric]["median"]
    except (KeyError, TypeError):
        return None
    return float(v)


def checks(
    summary: dict[str, Any],
    *,
    subject: str,
    baseline: str,
    memory_budget: int | None,
    upload_ratio: float = 1.8,
    upload_cpu: float = 0.5,
    download_ratio: float = 1.5,
    rss_slack_mib: float = 100.0,
) -> list[Check]:
    out: list[Check] = []

    def na(name: str, why: str) -> None:
        out.append(Check(name, None, f"not measured: {why}"))

    up, down = "upload-1g", "download-1g"
    name = f"{up}: {subject} MB/s >= {upload_ratio}x {baseline}"
    r = ratio(summary, up, subject, baseline)
    if r is None:
        na(name, f"needs {up} with both {subject} and {baseline}")
    else:
        a = _get(summary, up, subject, "mb_s")
        b = _get(summary, up, baseline, "mb_s")
        out.append(Check(name, r >= upload_ratio, f"{a:.0f} vs {b:.0f} MB/s = {r:.2f}x"))

    name = f"{up}: {subject} transfer-phase client CPU <= {upload_cpu} s/GiB"
    c = _get(summary, up, subject, "cpu_transfer_s_per_gib")
    if c is None:
        na(name, f"needs {up} with {subject}")
    else:
        out.append(Check(name, c <= upload_cpu, f"{c:.2f} s/GiB"))

    name = f"{down}: {subject} MB/s >= {download_ratio}x {baseline}"
    r = ratio(summary, down, subject, baseline)
    if r is None:
        na(name, f"needs {down} with both {subject} and {baseline}")
    else:
        a = _get(summary, down, subject, "mb_s")
        b = _get(summary, down, baseline, "mb_s")
        out.append(Check(name, r >= download_ratio, f"{a:.0f} vs {b:.0f} MB/s = {r:.2f}x"))

    if memory_budget is None:
        na(f"{subject} peak RSS <= memory budget + {rss_slack_mib:g} MiB", "no memory budget")
        return out
    limit = memory_budget / MIB + rss_slack_mib
    for workload, peers in summary.items():
        name = f"{workload}: {subject} peak RSS <= {memory_budget / MIB:g} + {rss_slack_mib:g} MiB"
        rss = _get(summary, workload, subject, "peak_rss_mib")
        if subject not in peers or rss is None:
            continue
        anon = _get(summary, workload, subject, "peak_rss_anon_mib")
        mx = peers[subject]["peak_rss_mib"]["max"]
        detail = f"median {rss:.0f} MiB (max {mx:.0f}) vs {limit:.0f} MiB"
        if anon is not None:
            detail += f"; anonymous only: {anon:.0f} MiB"
        out.append(Check(name, mx <= limit, detail))
    return out


# -- Markdown ----------------------------------------------------------------------


def _fmt(s: dict[str, Any] | None, digits: int = 0, spread: bool = True) -> str:
    if not s:
        return "–"
    med = f"{s['median']:.{digits}f}"
    if not spread or s["n"] < 2:
        return med
    return f"{med} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    cfg = result["config"]
    summary = result["summary"]
    baseline = cfg["baseline"]
    lines: list[str] = []
    lines.append(f"# fastxfer benchmark — {result['started_at']}")
    lines.append("")
    mem = m.get("memory_bytes")
    lines.append(
        f"Machine: {m['cpu_model']}, {m['cores']} cores, "
        f"{mem / GIB:.0f} GiB RAM; {m['platform']}; Python {m['python']}."
        if mem
        else f"Machine: {m['cpu_model']}, {m['cores']} cores; Python {m['python']}."
    )
    pk = m["packages"]
    lines.append(
        "Packages: "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v)
        + (f"; {m['rclone']}" if m.get("rclone") else "")
        + "."
    )
    git = m.get("git") or {}
    if git.get("commit"):
        lines.append(
            f"Commit: `{git['commit'][:12]}`"
            + (" (fastxfer/ or benchmarks/ modified)" if git.get("dirty") else "")
            + "."
        )
    tgt = cfg["target"]
    lines.append(
        f"Target: {tgt['kind']} at {tgt['endpoint_url'] or 'AWS'}"
        + (f" ({cfg['server_args']})" if cfg.get("server_args") else "")
        + f"; botocore request_checksum_calculation/response_checksum_validation = "
        f"`{tgt['botocore_checksums']}` for every botocore-based peer."
    )
    lines.append(
        f"Runs: {cfg['runs']} per peer and workload, peers interleaved within each round "
        f"({' → '.join(cfg['peers'])}); scale {cfg['scale']:g}; figures are medians (min–max)."
    )
    lines.append("")
    lines.append(
        f"| workload | peer | MB/s | vs {baseline} | wall s | client CPU s/GiB transfer | "
        "(user / sys) | client CPU s/GiB process | server CPU s/GiB | peak RSS MiB | "
        "anon RSS MiB | noise cpu-s | runs |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wname, peers in summary.items():
        wdesc = result["workloads"][wname]["describe"]
        for pname, e in peers.items():
            if e.get("not_applicable"):
                lines.append(
                    f"| {wname} | {pname} | n/a: {e['not_applicable']} | | | | | | | | | | 0 |"
                )
                continue
            r = ratio(summary, wname, pname, baseline)
            rtxt = "–" if r is None else f"{r:.2f}x"
            failed = f" ({e['failed']} failed)" if e.get("failed") else ""
            lines.append(
                f"| {wname} ({wdesc}) | {pname} | {_fmt(e['mb_s'])} | {rtxt} | "
                f"{_fmt(e['wall_s'], 2)} | {_fmt(e['cpu_transfer_s_per_gib'], 2)} | "
                f"{_fmt(e['user_s_per_gib'], 2, spread=False)} / "
                f"{_fmt(e['sys_s_per_gib'], 2, spread=False)} | "
                f"{_fmt(e['cpu_process_s_per_gib'], 2)} | {_fmt(e['server_cpu_s_per_gib'], 2)} | "
                f"{_fmt(e['peak_rss_mib'])} | {_fmt(e['peak_rss_anon_mib'], spread=False)} | "
                f"{_fmt(e['other_cpu_s'], 1, spread=False)} | {e['runs'] - e['failed']}{failed} |"
            )
    lines.append("")
    lines.append("## Checks (issue 2 targets)")
    lines.append("")
    if cfg["scale"] != 1:
        lines.append(
            f"_Scale {cfg['scale']:g}: sizes differ from the targets' 1 GiB, "
            "so these are indicative only._"
        )
        lines.append("")
    for c in result["checks"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[c["passed"]]
        lines.append(f"- **{mark}** {c['name']}: {c['detail']}")
    lines.append("")
    lines.append("## Peers")
    lines.append("")
    for pname, p in result["peers"].items():
        settings = ", ".join(f"{k}={v}" for k, v in p["settings"].items()) or "defaults"
        lines.append(f"- **{pname}**: {p['summary']}. Settings: {settings}.")
    lines.append("")
    lines.append("## Noise")
    lines.append("")
    noise = result.get("noise", {})

    def num(key: str) -> str:
        v = noise.get(key)
        return "–" if v is None else f"{v:.2f} s"

    lines.append(
        f"Load average before/after: {noise.get('loadavg_before')} / {noise.get('loadavg_after')}. "
        f"CPU used by other processes during runs (median, max): "
        f"{num('other_cpu_s_median')}, {num('other_cpu_s_max')}; steal (max): {num('steal_s_max')}."
    )
    waits = [r.get("waited_for_idle_s") for r in result.get("runs", [])]
    if any(w is not None for w in waits):
        total = sum(w for w in waits if w is not None)
        lines.append(
            f"Waited {total:.0f} s in all for the machine to be idle before runs (--wait-idle)."
        )
    lines.append("")
    lines.append("## Columns")
    lines.append("")
    for k, v in METRICS.items():
        lines.append(f"- `{k}`: {v}")
    lines.append(
        "- Every run is checked: uploads by listing the objects (size) and, on the embedded "
        "server, comparing the stored files with the sources; downloads by comparing the "
        "downloaded bytes with the sources. Checks are outside the timing."
    )
    lines.append("")
    return "\n".join(lines)
