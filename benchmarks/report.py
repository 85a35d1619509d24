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
    "proxy_cores": (
        "latency profile: the shaping proxy's CPU over the transfer's wall time, cores "
        "(near 1.0 would mean the proxy is the bottleneck)"
    ),
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
    px = run.get("proxy_cpu_s")
    run["proxy_cores"] = px / run["wall_s"] if px is not None and run["wall_s"] else None


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


# -- targets -------------------------------------------------------------------


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


def best_other(summary: dict[str, Any], workload: str, subject: str) -> tuple[str, float] | None:
    """The fastest peer but ``subject`` (and its variants) on a workload, by median MB/s."""
    best: tuple[str, float] | None = None
    for peer in summary.get(workload, {}):
        if peer.split("@", 1)[0] == subject.split("@", 1)[0]:
            continue
        v = _get(summary, workload, peer, "mb_s")
        if v is not None and (best is None or v > best[1]):
            best = (peer, v)
    return best


def checks(
    summary: dict[str, Any],
    *,
    subject: str,
    baseline: str,
    memory_budget: int | None,
    suite: str = "loopback",
    rss_slack_mib: float = 100.0,
) -> list[Check]:
    """The issue's targets, from medians of one run of the suite."""
    out: list[Check] = []

    def na(name: str, why: str) -> None:
        out.append(Check(name, None, f"not measured: {why}"))

    def vs(workload: str, a_peer: str, b_peer: str, target: float, label: str = "") -> None:
        name = f"{workload}: {a_peer} MB/s >= {target:g}x {label or b_peer}"
        a = _get(summary, workload, a_peer, "mb_s")
        b = _get(summary, workload, b_peer, "mb_s")
        if a is None or b is None or not b:
            na(name, f"needs {workload} with {a_peer} and {b_peer}")
            return
        r = a / b
        how = f"{a:.0f} vs {b:.0f} MB/s" + (f" ({b_peer})" if label else "")
        out.append(Check(name, r >= target, f"{how} = {r:.2f}x (margin {r / target - 1:+.0%})"))

    def cpu(workload: str, limit: float) -> None:
        name = f"{workload}: {subject} transfer-phase client CPU <= {limit:g} s/GiB"
        c = _get(summary, workload, subject, "cpu_transfer_s_per_gib")
        if c is None:
            na(name, f"needs {workload} with {subject}")
            return
        out.append(Check(name, c <= limit, f"{c:.2f} s/GiB (margin {1 - c / limit:+.0%})"))

    def best(workload: str) -> None:
        b = best_other(summary, workload, subject)
        name = f"{workload}: {subject} MB/s >= 1x the best other peer"
        if b is None:
            na(name, "no other peer measured")
            return
        vs(workload, subject, b[0], 1.0, "the best other peer")

    if suite == "latency":
        for workload in summary:
            c1, c16 = f"{subject}@c1", f"{subject}@c16"
            vs(workload, c16, c1, 12.0)
            vs(workload, c16, f"{baseline}@default", 1.5, f"{baseline} as shipped")
            vs(workload, c16, f"{baseline}@c16", 1.0)
        return out

    for up in ("upload-1g", "upload-8x128m"):
        vs(up, subject, baseline, 2.0)
        best(up)
        cpu(up, 0.45)
    vs("upload-2000x64k", subject, baseline, 3.0)
    vs("download-2g", subject, baseline, 2.5)
    best("download-2g")
    cpu("download-2g", 0.4)

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
    shaping = cfg.get("shaping")
    if shaping:
        lines.append("")
        lines.extend(scaling_table(result))
    else:
        lines.append("")
        lines.extend(pivot_table(result, "mb_s", f"MB/s, median (x {baseline})", 0, baseline))
        lines.append("")
        lines.extend(
            pivot_table(result, "cpu_transfer_s_per_gib", "client CPU s/GiB, transfer phase", 2)
        )
        lines.append("")
        lines.append("All figures, with min–max of the runs:")
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
    lines.append("## Checks (targets)")
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
    if result.get("notes"):
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {n}" for n in result["notes"])
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


def scaling_table(result: dict[str, Any]) -> list[str]:
    """Latency profile: MB/s per peer (rows) and connection count (columns)."""
    cfg = result["config"]
    sh = cfg["shaping"]
    conns: list[int] = sh["connections"]
    summary = result["summary"]
    lines = [
        f"High-latency profile: every request goes through `benchmarks/shaper.py` on "
        f"127.0.0.1, which adds {sh['delay_ms']:g} ms of round trip ({sh['delay_ms'] / 2:g} ms "
        f"each way) and caps every TCP connection at {sh['rate_bytes_s'] / 1e6:g} MB/s per "
        f"direction; parts of {sh['part_size'] / MIB:g} MiB for every peer. Columns: the peer "
        "as shipped (its own concurrency and part size), then with its connection knob at "
        "N (see Peers). MB/s medians (min–max); ideal = N x the cap.",
        "",
    ]
    head = "| workload | peer | as shipped | " + " | ".join(f"{n} conn" for n in conns)
    head += f" | {conns[-1]} vs 1 | proxy cores (max) |"
    lines.append(head)
    lines.append("|---|---|" + "---:|" * (len(conns) + 3))
    for wname, peers in summary.items():
        bases: list[str] = []
        for label in peers:
            b = label.split("@", 1)[0]
            if b not in bases:
                bases.append(b)
        for b in bases:
            cells: list[str] = []
            proxy: list[float] = []
            for v in ["default", *(f"c{n}" for n in conns)]:
                e = peers.get(f"{b}@{v}")
                if e is None:
                    cells.append("–")
                elif e.get("not_applicable"):
                    cells.append("n/a")
                else:
                    cells.append(_fmt(e.get("mb_s"), 1))
                    px = e.get("proxy_cores")
                    if px:
                        proxy.append(px["max"])
            if all(c == "n/a" for c in cells):
                na = next(iter(e for k, e in peers.items() if k.startswith(b + "@")))
                lines.append(
                    f"| {wname} | {b} | n/a: {na['not_applicable']} |" + " |" * (len(conns) + 2)
                )
                continue
            lo = _get(summary, wname, f"{b}@c{conns[0]}", "mb_s")
            hi = _get(summary, wname, f"{b}@c{conns[-1]}", "mb_s")
            sc = f"{hi / lo:.1f}x" if lo and hi else "–"
            pxs = f"{max(proxy):.2f}" if proxy else "–"
            lines.append(f"| {wname} | {b} | " + " | ".join(cells) + f" | {sc} | {pxs} |")
    ideal = " / ".join(f"{n}: {n * sh['rate_bytes_s'] / 1e6:g}" for n in conns)
    lines.append("")
    lines.append(f"Ideal MB/s (N x cap): {ideal}.")
    return lines


def pivot_table(
    result: dict[str, Any], metric: str, title: str, digits: int, baseline: str | None = None
) -> list[str]:
    """Peers as rows, workloads as columns: one metric's medians."""
    summary = result["summary"]
    workloads = list(summary)
    peers: list[str] = []
    for w in workloads:
        for p in summary[w]:
            if p not in peers:
                peers.append(p)
    lines = [
        f"| {title} | " + " | ".join(result["workloads"][w]["describe"] for w in workloads) + " |",
        "|---|" + "---:|" * len(workloads),
    ]
    for p in peers:
        cells: list[str] = []
        for w in workloads:
            e = summary[w].get(p)
            if e is None:
                cells.append("–")
            elif e.get("not_applicable"):
                cells.append("n/a")
            else:
                v = _get(summary, w, p, metric)
                txt = "–" if v is None else f"{v:.{digits}f}"
                r = ratio(summary, w, p, baseline) if baseline and v is not None else None
                if r is not None:
                    txt += f" ({r:.2f}x)"
                cells.append(f"**{txt}**" if p == "fastxfer" else txt)
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines
