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
    "cpu_process_s": "client CPU of the whole process, s",
    "cpu_client_s": (
        "client CPU of the client's own process(es) from start to exit, s: the whole "
        "process for Python peers, the tool's processes for tool peers (s5cmd, rclone, "
        "fastxfer-cli; without the Python wrapper that launches them); what the start-up "
        "and marginal CPU figures use"
    ),
    "child_wall_s": "wall time of the whole client process as the orchestrator saw it, s",
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


def _family(label: str) -> str:
    """A peer's product: fastxfer-cli counts as fastxfer (one tool, two ways in)."""
    base = label.split("@", 1)[0]
    return "fastxfer" if base.startswith("fastxfer") else base


def client_cpu(summary: dict[str, Any], workload: str, peer: str) -> float | None:
    """Median CPU of the client's own process(es) (older results: the whole child)."""
    v = _get(summary, workload, peer, "cpu_client_s")
    return v if v is not None else _get(summary, workload, peer, "cpu_process_s")


def marginal_cpu(
    summary: dict[str, Any], big: str, small: str, peer: str
) -> tuple[float, float, float, float] | None:
    """(s/GiB, big process CPU s, small process CPU s, GiB): whole-process client CPU
    of ``big`` minus that of ``small`` (1 byte), per GiB of the difference in size."""
    a = client_cpu(summary, big, peer)
    b = client_cpu(summary, small, peer)
    try:
        gib = (summary[big][peer]["bytes"] - summary[small][peer]["bytes"]) / GIB
    except (KeyError, TypeError):
        return None
    if a is None or b is None or gib <= 0:
        return None
    return (a - b) / gib, a, b, gib


STARTUP_PAIRS = (("upload-1g", "upload-1b"), ("download-1g", "download-1b"))
"""(1 GiB workload, 1-byte workload) per direction, for the marginal CPU."""


def sweep_figures(
    summary: dict[str, Any], sweep: dict[str, Any], workload: str
) -> tuple[float | None, dict[int, float]]:
    """(default MB/s, {fixed concurrency: MB/s}) of one sweep workload (medians)."""
    default = _get(summary, workload, sweep["default"], "mb_s")
    fixed: dict[int, float] = {}
    for n, label in sweep["labels"].items():
        v = _get(summary, workload, label, "mb_s")
        if v is not None:
            fixed[int(n)] = v
    return default, fixed


def checks(
    summary: dict[str, Any],
    *,
    subject: str,
    baseline: str,
    memory_budget: int | None,
    suite: str = "loopback",
    sweep: dict[str, Any] | None = None,
    rss_slack_mib: float = 100.0,
) -> list[Check]:
    """Issue #13's must-show targets, from the medians of one run of the suite."""
    out: list[Check] = []

    def na(name: str, why: str) -> None:
        out.append(Check(name, None, f"not measured: {why}"))

    def vs(workload: str, b_peer: str, target: float, label: str = "") -> None:
        name = f"{workload}: {subject} MB/s >= {target:g}x {label or b_peer}"
        a = _get(summary, workload, subject, "mb_s")
        b = _get(summary, workload, b_peer, "mb_s")
        if a is None or b is None or not b:
            na(name, f"needs {workload} with {subject} and {b_peer}")
            return
        r = a / b
        how = f"{a:.0f} vs {b:.0f} MB/s"
        out.append(Check(name, r >= target, f"{how} = {r:.2f}x (margin {r / target - 1:+.0%})"))

    def marginal(big: str, small: str, direction: str, limit: float) -> None:
        name = (
            f"{direction}: {subject} marginal client CPU <= {limit:g} s/GiB "
            f"(whole process, {big} minus {small})"
        )
        m = marginal_cpu(summary, big, small, subject)
        if m is None:
            na(name, f"needs {big} and {small} with {subject}")
            return
        per, a, b, gib = m
        out.append(
            Check(
                name,
                per <= limit,
                f"{a:.2f} s - {b:.2f} s over {gib:.3g} GiB = {per:.2f} s/GiB "
                f"(margin {1 - per / limit:+.0%})",
            )
        )

    def swept(workload: str) -> None:
        assert sweep is not None
        tol = float(sweep["tolerance"])
        where = "loopback" if suite == "loopback" else "WAN profile"
        name = (
            f"{workload}: {subject} default within {tol:.0%} of its best fixed "
            f"--concurrency ({where})"
        )
        default, fixed = sweep_figures(summary, sweep, workload)
        if default is None or not fixed:
            na(name, f"needs {workload} with {sweep['default']} and the sweep")
            return
        n, top = max(fixed.items(), key=lambda kv: kv[1])
        r = default / top
        grid = ", ".join(f"{c}: {v:.0f}" for c, v in sorted(fixed.items()))
        out.append(
            Check(
                name,
                r >= 1 - tol,
                f"default {default:.0f} vs {top:.0f} MB/s at --concurrency {n} = {r:.2f}x "
                f"(margin {r / (1 - tol) - 1:+.0%}); fixed: {grid}",
            )
        )

    if suite != "latency":
        vs("upload-1g", baseline, 2.0)
        vs("upload-1g", "boto3-tuned", 1.0)
        vs("download-1g", baseline, 1.8)
        vs("download-1g", "s5cmd", 0.9)
        # boto3-default is "boto3 (10 threads)": a 10-thread pool, s3transfer's 10 requests.
        vs("upload-2000x64k", baseline, 5.0, f"{baseline} (10 threads)")
        vs("upload-2000x64k", "s5cmd", 1.0)
        for big, small in STARTUP_PAIRS:
            marginal(big, small, big.split("-", 1)[0], 1.0)
    if sweep is not None:
        for workload in sweep["workloads"]:
            swept(workload)
    else:
        where, tol = ("WAN profile", 0.10) if suite == "latency" else ("loopback", 0.05)
        na(
            f"{subject} default within {tol:.0%} of its best fixed --concurrency ({where})",
            "no --concurrency sweep in this run",
        )

    if memory_budget is None:
        na(f"{subject} peak RSS <= memory budget + {rss_slack_mib:g} MiB", "no memory budget")
        return out
    limit = memory_budget / MIB + rss_slack_mib
    for workload, peers in summary.items():
        if workload.endswith("-1b"):
            continue  # 1 byte: nothing to hold in memory
        # fastxfer as shipped and at every fixed concurrency (same memory limit).
        rows = [
            (p, peers[p]["peak_rss_mib"])
            for p in peers
            if p.split("@", 1)[0] == subject and (peers[p].get("peak_rss_mib") or {}).get("max")
        ]
        if not rows:
            continue
        worst, st = max(rows, key=lambda r: r[1]["max"])
        mx = st["max"]
        name = f"{workload}: {subject} peak RSS <= {memory_budget / MIB:g} + {rss_slack_mib:g} MiB"
        detail = f"max {mx:.0f} MiB ({worst}; median {st['median']:.0f}) vs {limit:.0f} MiB"
        anon = _get(summary, workload, worst, "peak_rss_anon_mib")
        if anon is not None:
            detail += f"; anonymous only: {anon:.0f} MiB"
        if len(rows) > 1:
            detail += f"; {len(rows)} fastxfer rows"
        detail += f" (margin {1 - mx / limit:+.0%})"
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


def _role(result: dict[str, Any], label: str) -> str:
    return str(((result["config"].get("variants") or {}).get(label) or {}).get("role") or "")


def _kind(result: dict[str, Any], workload: str) -> str:
    w = result["workloads"][workload]
    return str(w.get("kind") or ("single" if w["count"] == 1 else "many"))


def sweep_only(result: dict[str, Any]) -> set[str]:
    """Workloads only fastxfer's sweep runs on (latency: lat-sweep-upload/-download)."""
    return set((result["config"].get("sweep") or {}).get("only") or [])


def scaling_workloads(result: dict[str, Any]) -> list[str]:
    """Latency workloads of the scaling table (every peer, each connection count)."""
    return [w for w in result["summary"] if w not in sweep_only(result)]


def headline_workloads(result: dict[str, Any]) -> list[str]:
    """Workloads whose MB/s mean something (not the 1-byte start-up ones)."""
    return [w for w in result["summary"] if _kind(result, w) != "startup"]


def table_rows(result: dict[str, Any]) -> list[str]:
    """Rows of the headline tables: every peer measured as shipped, then each at
    the common concurrency (``PEER@cN``); rows only for the sweep are left out."""
    seen: list[str] = []
    for peers in result["summary"].values():
        seen.extend(p for p in peers if p not in seen)
    order = [p for p in result["config"].get("peers", []) if p in seen]
    order += [p for p in seen if p not in order]
    rows = [p for p in order if _role(result, p) != "sweep"]
    shipped = [p for p in rows if "common" not in _role(result, p)]
    return shipped + [p for p in rows if p not in shipped]


def _subject_cell(label: str, text: str) -> str:
    return f"**{text}**" if label.split("@", 1)[0] == "fastxfer" else text


def _warming(result: dict[str, Any]) -> str | None:
    cfg = result["config"]
    warmed = cfg.get("warmed")
    downloads = any(w["direction"] == "download" for w in result["workloads"].values())
    if warmed is None:
        if not downloads:
            return None
        return (
            "Objects were **not** warmed before the timed downloads (this result predates "
            "warming): the first peer to read each object paid rclone's MD5 of it."
        )
    if not warmed:
        return None
    n = sum(w["objects"] for w in warmed.values())
    gib = sum(w["bytes"] for w in warmed.values()) / GIB
    cpus = [[p["server_cpu_s"] for p in w["passes"]] for w in warmed.values()]
    text = (
        f"Warming: every object a download workload reads ({n} object{'s' * (n != 1)}, "
        f"{gib:.3g} GiB) was "
        "read once with an untimed HEAD right after it was uploaded, before any timed run "
        "(rclone serve s3 computes an object's MD5 ETag on its first HEAD, GET or LIST, ~2 "
        "server CPU-s per fresh GiB, then caches it; unwarmed, whichever peer reads first "
        "pays)."
    )
    if all(c[0] is not None and c[1] is not None for c in cpus):
        first = sum(c[0] for c in cpus)
        second = sum(c[1] for c in cpus)
        text += (
            f" Server CPU of those HEADs: {first:.2f} s; of a second HEAD of each (to check "
            f"that they stayed warm): {second:.2f} s."
        )
    rewarm = [
        r.get("rewarm_server_cpu_s")
        for r in result.get("runs", [])
        if r.get("rewarm_s") is not None
    ]
    if rewarm:
        known = [c for c in rewarm if c is not None]
        text += (
            f" Before each of the {len(rewarm)} download runs its objects were HEADed again, "
            "untimed, in case the server had forgotten them"
            + (
                f" (server CPU of those HEADs: {sum(known):.2f} s in all, at most "
                f"{max(known):.2f} s before one run)."
                if known
                else "."
            )
        )
    return text


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
    if result.get("argv") is not None:
        lines.append(f"Command: `python -m benchmarks.run {' '.join(result['argv'])}`.")
    warm = _warming(result)
    if warm:
        lines.append(warm)
    shaping = cfg.get("shaping")
    if shaping:
        lines.append("")
        lines.extend(scaling_table(result))
        lines.append("")
        lines.append(latency_wins(result))
    else:
        lines.append("")
        lines.extend(
            pivot_table(result, "mb_s", f"MB/s, median (x {baseline})", 0, baseline=baseline)
        )
        lines.append("")
        lines.append(loopback_wins(result))
        lines.append("")
        lines.extend(
            pivot_table(result, "cpu_transfer_s_per_gib", "client CPU s/GiB, transfer phase", 2)
        )
        startup = startup_table(result)
        if startup:
            lines.append("")
            lines.extend(startup)
    sweep = sweep_table(result)
    if sweep:
        lines.append("")
        lines.extend(sweep)
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
        if _kind(result, wname) == "startup":
            continue
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
    startup_runs = startup_figures(result)
    if startup_runs:
        lines.append("")
        lines.extend(startup_runs)
    lines.append("")
    lines.append("## Checks (targets)")
    lines.append("")
    if cfg["scale"] != 1:
        lines.append(
            f"_Scale {cfg['scale']:g}: sizes differ from the targets' 1 GiB, "
            "so these are indicative only._"
        )
        lines.append("")
    lines.extend(check_lines(result))
    lines.append("")
    if result.get("notes"):
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {n}" for n in result["notes"])
        lines.append("")
    lines.append("## Peers")
    lines.append("")
    for pname, p in result["peers"].items():
        eff = p.get("effective") or {}
        settings = ", ".join(_setting(k, v, eff) for k, v in p["settings"].items()) or "defaults"
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
        "- `PEER@cN` (loopback): the peer with only its connection knob at N (see Peers), "
        "everything else as shipped; latency profile: knob at N and the profile's part size "
        "for every peer. `fastxfer@fixedN` (latency): only `--concurrency N`. "
        "`PEER@default`: as shipped."
    )
    lines.append(
        "- Every run is checked: uploads by listing the objects (size) and, on the embedded "
        "server, comparing the stored files with the sources; downloads by comparing the "
        "downloaded bytes with the sources. Checks are outside the timing."
    )
    lines.append("")
    return "\n".join(lines)


def _setting(key: str, value: Any, effective: dict[str, Any]) -> str:
    """``key=value``; a None (the peer's own default) shows what it resolved to."""
    if value is not None:
        return f"{key}={value}"
    return f"{key}={effective[key]} (default)" if key in effective else f"{key}=(default)"


def check_lines(result: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for c in result["checks"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[c["passed"]]
        out.append(f"- **{mark}** {c['name']}: {c['detail']}")
    return out


def _wins(
    result: dict[str, Any],
    workloads: list[str],
    rows: list[str],
    subject: str,
    lead: str,
) -> str:
    """One sentence: who is fastest where (median MB/s), and how far fastxfer is behind."""
    summary = result["summary"]
    by_winner: dict[str, list[str]] = {}
    behind: list[str] = []
    name = {r: r.split("@", 1)[0] for r in rows}
    for w in workloads:
        vals = [(p, v) for p in rows if (v := _get(summary, w, p, "mb_s")) is not None]
        if len(vals) < 2:
            continue
        vals.sort(key=lambda pv: -pv[1])
        win, top = vals[0]
        desc = result["workloads"][w]["describe"]
        runner = next(((p, v) for p, v in vals[1:] if _family(p) != _family(win)), None)
        text = desc
        if runner is not None:
            text += f" (+{top / runner[1] - 1:.0%} over {name[runner[0]]})"
        by_winner.setdefault(win, []).append(text)
        fx = _get(summary, w, subject, "mb_s")
        if _family(win) != "fastxfer" and fx is not None:
            behind.append(f"{fx / top:.2f}x of {name[win]} on {desc}")
    if not by_winner:
        return f"{lead}: too few peers measured to compare."
    parts = []
    for i, (win, items) in enumerate(
        sorted(by_winner.items(), key=lambda kv: (_family(kv[0]) != "fastxfer", -len(kv[1])))
    ):
        joined = ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1]
        parts.append(f"**{name[win]}**" + (" is fastest on " if i == 0 else " on ") + joined)
    text = f"{lead}: " + "; ".join(parts) + "."
    if behind:
        text += f" {name.get(subject, subject.split('@', 1)[0])} reaches " + "; ".join(behind) + "."
    return text


def loopback_wins(result: dict[str, Any]) -> str:
    rows = table_rows(result)
    workloads = headline_workloads(result)
    shipped = [r for r in rows if "common" not in _role(result, r)]
    text = _wins(result, workloads, shipped, "fastxfer", "Who wins where, as shipped")
    n = result["config"].get("common_concurrency")
    common = [r for r in rows if "common" in _role(result, r)]
    if n and common:
        single = [w for w in workloads if _kind(result, w) == "single"]
        text += " " + _wins(
            result,
            single,
            common,
            f"fastxfer@c{n}",
            f"With every peer's connection knob at {n} (single objects)",
        )
    return text


def latency_wins(result: dict[str, Any]) -> str:
    summary = result["summary"]
    workloads = scaling_workloads(result)
    labels = {p for w in workloads for p in summary[w]}
    texts = []
    shipped = sorted((p for p in labels if p.endswith("@default")), key=_order(result))
    if shipped:
        texts.append(_wins(result, workloads, shipped, "fastxfer@default", "As shipped"))
    for n in result["config"]["shaping"]["connections"]:
        rows = sorted((p for p in labels if p.endswith(f"@c{n}")), key=_order(result))
        lead = f"At {n} connection{'s' * (n != 1)}"
        texts.append(_wins(result, workloads, rows, f"fastxfer@c{n}", lead))
    return "Who wins where over the shaped link. " + " ".join(texts)


def _order(result: dict[str, Any]) -> Any:
    order = result["config"].get("peers", [])
    return lambda p: order.index(p) if p in order else len(order)


def _default_knob(result: dict[str, Any], label: str) -> str:
    """`` (64, tuned)``: the default row's concurrency as it resolved, when recorded."""
    eff = (result["peers"].get(label) or {}).get("effective") or {}
    if eff.get("max_concurrency") is None:
        return ""
    tuned = ", tuned" if eff.get("autotune") else ""
    return f" ({eff['max_concurrency']}{tuned})"


def sweep_table(result: dict[str, Any]) -> list[str]:
    """fastxfer's default against each fixed --concurrency (MB/s, server CPU)."""
    sweep = result["config"].get("sweep")
    if not sweep:
        return []
    summary = result["summary"]
    ns = sorted(int(n) for n in sweep["labels"])
    tol = float(sweep["tolerance"])
    lines = [
        f"fastxfer's `--concurrency` sweep: its default ({sweep['default']}) against fixed "
        f"values, everything else as shipped (target: the default within {tol:.0%} of the "
        "best fixed value). Medians (min–max).",
        "",
        f"| workload | metric | default{_default_knob(result, sweep['default'])} | "
        + " | ".join(f"--concurrency {n}" for n in ns)
        + " | default / best |",
        "|---|---|" + "---:|" * (len(ns) + 2),
    ]
    for w in sweep["workloads"]:
        if w not in summary:
            continue
        desc = result["workloads"][w]["describe"]
        default, fixed = sweep_figures(summary, sweep, w)
        labels = [sweep["default"], *(sweep["labels"][str(n)] for n in ns)]
        rel = "–"
        if default is not None and fixed:
            n_best, top = max(fixed.items(), key=lambda kv: kv[1])
            rel = f"{default / top:.2f}x (best: {n_best})"
        for metric, title, digits in (
            ("mb_s", "MB/s", 0),
            ("server_cpu_s_per_gib", "server CPU s/GiB", 2),
            ("cpu_transfer_s_per_gib", "client CPU s/GiB", 2),
        ):
            cells = [_fmt((summary[w].get(lb) or {}).get(metric), digits) for lb in labels]
            last = rel if metric == "mb_s" else ""
            lines.append(f"| {desc} | {title} | " + " | ".join(cells) + f" | {last} |")
    return lines


def startup_table(result: dict[str, Any]) -> list[str]:
    """Start-up (1-byte transfers) and marginal CPU per GiB, per peer as shipped."""
    summary = result["summary"]
    have = [(big, small) for big, small in STARTUP_PAIRS if small in summary]
    if not have:
        return []
    rows = [
        r
        for r in table_rows(result)
        if "common" not in _role(result, r) and any(r in summary[s] for _, s in have)
    ]
    head = "| whole client process, medians |"
    sep = "|---|"
    for big, _small in have:
        d = big.split("-", 1)[0]
        head += f" 1 B {d}: CPU s | 1 B {d}: wall s | {big}: CPU s | marginal {d} s/GiB |"
        sep += "---:|" * 4
    lines = [
        "Start-up and marginal client CPU: each peer's whole client process (interpreter or "
        "binary start, imports, client set-up, the transfer, exit; for s5cmd, rclone and "
        "fastxfer-cli the tool's own processes) for a 1-byte transfer, and for the 1 GiB "
        "one minus the 1-byte one, per GiB (target: <= 1.0 s/GiB each way for fastxfer). "
        "Wall: the whole process as the orchestrator saw it (tools: plus the ~0.1 s "
        "Python wrapper that starts them).",
        "",
        head,
        sep,
    ]
    for r in rows:
        cells: list[str] = []
        for big, small in have:
            e = summary[small].get(r) or {}
            if e.get("not_applicable"):
                cells += ["n/a"] * 4
                continue
            c = client_cpu(summary, small, r)
            cells.append("–" if c is None else f"{c:.2f}")
            cells.append(_fmt(e.get("child_wall_s"), 2, spread=False))
            a = client_cpu(summary, big, r)
            cells.append("–" if a is None else f"{a:.2f}")
            mc = marginal_cpu(summary, big, small, r)
            cells.append("–" if mc is None else f"{mc[0]:.2f}")
        lines.append(f"| {r} | " + " | ".join(_subject_cell(r, c) for c in cells) + " |")
    return lines


def startup_figures(result: dict[str, Any]) -> list[str]:
    """All figures of the 1-byte workloads, in seconds (per-GiB figures mean nothing)."""
    summary = result["summary"]
    startup = [w for w in summary if _kind(result, w) == "startup"]
    if not startup:
        return []
    lines = [
        "1-byte workloads, all figures (seconds, not per GiB):",
        "",
        "| workload | peer | client process CPU s | with wrapper CPU s | process wall s | "
        "transfer-phase wall s | server CPU s | peak RSS MiB | runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in startup:
        gib = result["workloads"][w]["total_bytes"] / GIB
        for pname, e in summary[w].items():
            if e.get("not_applicable"):
                lines.append(f"| {w} | {pname} | n/a: {e['not_applicable']} | | | | | | 0 |")
                continue
            srv = e.get("server_cpu_s_per_gib")
            srv_s = (
                "–"
                if not srv
                else _fmt({k: (v * gib if k != "n" else v) for k, v in srv.items()}, 3)
            )
            failed = f" ({e['failed']} failed)" if e.get("failed") else ""
            lines.append(
                f"| {w} | {pname} | {_fmt(e.get('cpu_client_s'), 2)} | "
                f"{_fmt(e.get('cpu_process_s'), 2)} | {_fmt(e.get('child_wall_s'), 2)} | "
                f"{_fmt(e.get('wall_s'), 3)} | {srv_s} | "
                f"{_fmt(e.get('peak_rss_mib'))} | {e['runs'] - e['failed']}{failed} |"
            )
    return lines


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
    ratio_col = len(conns) > 1
    head = "| workload | peer | as shipped | " + "".join(f"{n} conn | " for n in conns)
    if ratio_col:
        head += f"{conns[-1]} vs {conns[0]} | "
    head += "proxy cores (max) |"
    lines.append(head)
    lines.append("|---|---|" + "---:|" * (len(conns) + 2 + ratio_col))
    for wname in scaling_workloads(result):
        peers = summary[wname]
        bases: list[str] = []
        for label in peers:
            if _role(result, label) == "sweep":
                continue
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
                    f"| {wname} | {b} | n/a: {na['not_applicable']} |"
                    + " |" * (len(conns) + 1 + ratio_col)
                )
                continue
            sc = ""
            if ratio_col:
                lo = _get(summary, wname, f"{b}@c{conns[0]}", "mb_s")
                hi = _get(summary, wname, f"{b}@c{conns[-1]}", "mb_s")
                sc = (f"{hi / lo:.1f}x" if lo and hi else "–") + " | "
            pxs = f"{max(proxy):.2f}" if proxy else "–"
            lines.append(f"| {wname} | {b} | " + " | ".join(cells) + f" | {sc}{pxs} |")
    if conns:
        ideal = " / ".join(f"{n}: {n * sh['rate_bytes_s'] / 1e6:g}" for n in conns)
        lines.append("")
        lines.append(f"Ideal MB/s (N x cap): {ideal}.")
    return lines


def pivot_table(
    result: dict[str, Any],
    metric: str,
    title: str,
    digits: int,
    baseline: str | None = None,
) -> list[str]:
    """Peers as rows (as shipped, then at the common concurrency), workloads as
    columns: one metric's medians, with the ratio to ``baseline`` when given."""
    summary = result["summary"]
    workloads = headline_workloads(result)
    peers = table_rows(result)
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
                cells.append(_subject_cell(p, txt))
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return lines


# -- README ----------------------------------------------------------------------------


README_BEGIN = (
    "<!-- README section: copy from this line to the 'end of README section' line into "
    "README.md's ## Benchmarks (image paths are relative to the repository root) -->"
)
README_END = "<!-- end of README section -->"


def readme_section(results: list[dict[str, Any]], charts: list[str]) -> str:
    """What README.md's benchmark section shows, from one loopback and/or one latency
    result: every measured peer with its ratio to boto3-default, who wins where,
    start-up and marginal CPU, fastxfer's concurrency sweep and the target lines."""
    loop = next((r for r in results if not r["config"].get("shaping")), None)
    lat = next((r for r in results if r["config"].get("shaping")), None)
    first = loop or lat
    if first is None:
        return ""
    m = first["machine"]
    cfg = first["config"]
    argvs = list(dict.fromkeys(" ".join(r.get("argv") or []) for r in results))
    cmds = " and ".join(f"`python -m benchmarks.run {a}`" for a in argvs)
    lines = [README_BEGIN, ""]
    warmed = all("warmed" in r["config"] for r in results)
    intro = (
        f"Latest run ({first['started_at']}; {m['cpu_model']}, {m['cores']} cores, client and "
        f"server sharing them; [benchmarks/results/latest.md](benchmarks/results/latest.md)): "
        f"{cfg['runs']} run{'s' * (cfg['runs'] != 1)} per peer and workload, interleaved, "
        "medians; "
        + (
            "every object a download reads is warmed (one untimed HEAD) before any timed run"
            if warmed
            else "objects were **not** warmed before the timed downloads (an older run)"
        )
        + f". MB/s with the ratio to {cfg['baseline']}; `PEER@cN` is the peer with only its "
        f"connection knob at N. Command: {cmds}."
    )
    lines.append(intro)
    if loop is not None:
        base = loop["config"]["baseline"]
        lines.append("")
        lines.extend(pivot_table(loop, "mb_s", f"MB/s (x {base})", 0, baseline=base))
        lines.append("")
        lines.append(loopback_wins(loop))
        if loop.get("notes"):
            lines.append(" ".join(f"({n})" for n in loop["notes"] if n.startswith("no ")))
        st = startup_table(loop)
        if st:
            lines.append("")
            lines.extend(st)
        sw = sweep_table(loop)
        if sw:
            lines.append("")
            lines.extend(sw)
    if lat is not None:
        lines.append("")
        lines.extend(scaling_table(lat))
        lines.append("")
        lines.append(latency_wins(lat))
        sw = sweep_table(lat)
        if sw:
            lines.append("")
            lines.extend(sw)
    lines.append("")
    lines.append("Targets (issue #13):")
    lines.append("")
    for r in results:
        lines.extend(check_lines(r))
    if charts:
        lines.append("")
        alt = {"throughput": "throughput", "cpu": "client CPU", "scaling": "latency scaling"}
        lines.extend(
            f"![{alt.get(c.rsplit('-', 1)[-1].removesuffix('.png'), c)}](benchmarks/results/{c})"
            for c in charts
        )
    lines.append("")
    lines.append(README_END)
    return "\n".join(lines)
