"""PNG charts of a result (matplotlib, Agg backend): written next to the JSON.

- loopback: MB/s per workload and peer (bars, min–max whiskers) and transfer-phase
  client CPU s/GiB;
- latency: MB/s against connection count per peer (log-2 x axis), one panel per
  workload, with the ideal N x cap line.

Without matplotlib nothing is drawn (the Markdown says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {
    "fastxfer": "#d62728",
    "fastxfer-cli": "#ff9896",
    "boto3-default": "#1f77b4",
    "boto3-tuned": "#aec7e8",
    "boto3-crt": "#ff7f0e",
    "aioboto3": "#9467bd",
    "s5cmd": "#2ca02c",
    "rclone": "#8c564b",
    "obstore": "#e377c2",
}


def _color(peer: str) -> str:
    return COLORS.get(peer.split("@", 1)[0], "#7f7f7f")


def render(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except ImportError:
        return []
    if (result["config"].get("shaping")) is not None:
        scaling = _latency(result, out_dir / f"{stem}-scaling.png")
        return [scaling] if scaling is not None else []
    from benchmarks.report import headline_workloads

    if not headline_workloads(result):
        return []
    return [
        _bars(result, out_dir / f"{stem}-throughput.png", "mb_s", "MB/s (median, min–max)"),
        _bars(
            result,
            out_dir / f"{stem}-cpu.png",
            "cpu_transfer_s_per_gib",
            "client CPU s/GiB, transfer phase (lower is better)",
        ),
    ]


def _title(result: dict[str, Any]) -> str:
    m = result["machine"]
    return f"{m['cpu_model']}, {m['cores']} cores; {result['config']['target']['kind']}"


def _bars(result: dict[str, Any], path: Path, metric: str, ylabel: str) -> Path:
    import matplotlib.pyplot as plt

    from benchmarks.report import headline_workloads, table_rows

    summary = result["summary"]
    # The 1-byte workloads' MB/s and per-GiB CPU mean nothing; sweep rows have their table.
    workloads = headline_workloads(result)
    peers = table_rows(result)
    ncols = min(4, len(workloads))
    nrows = -(-len(workloads) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.5, 3.6 * nrows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(workloads) :]:
        ax.set_visible(False)
    for ax, w in zip(axes, workloads, strict=False):
        xs, ys, lo, hi, cs, names = [], [], [], [], [], []
        for i, p in enumerate(peers):
            e = summary[w].get(p)
            st = e.get(metric) if e else None
            if not st:
                continue
            xs.append(i)
            ys.append(st["median"])
            lo.append(st["median"] - st["min"])
            hi.append(st["max"] - st["median"])
            cs.append(_color(p))
            names.append(p)
        ax.bar(xs, ys, color=cs, yerr=[lo, hi], capsize=2)
        ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
        ax.set_title(result["workloads"][w]["describe"], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for row in grid:
        row[0].set_ylabel(ylabel, fontsize=7)
    fig.suptitle(f"fastxfer benchmark — {ylabel} — {_title(result)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(result: dict[str, Any], path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    from benchmarks.report import scaling_workloads

    sh = result["config"]["shaping"]
    conns: list[int] = sh["connections"]
    summary = result["summary"]
    workloads = scaling_workloads(result)
    if not conns or not workloads:
        return None
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.5 * len(workloads), 4.2))
    if len(workloads) == 1:
        axes = [axes]
    for ax, w in zip(axes, workloads, strict=True):
        bases: list[str] = []
        for label in summary[w]:
            b = label.split("@", 1)[0]
            if b not in bases:
                bases.append(b)
        ax.plot(
            conns,
            [n * sh["rate_bytes_s"] / 1e6 for n in conns],
            "k:",
            label="ideal (N x cap)",
        )
        for b in bases:
            xs, ys = [], []
            for n in conns:
                e = summary[w].get(f"{b}@c{n}") or {}
                st = e.get("mb_s")
                if st:
                    xs.append(n)
                    ys.append(st["median"])
            if xs:
                ax.plot(xs, ys, "o-", color=_color(b), label=b, lw=2 if b == "fastxfer" else 1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(conns, [str(n) for n in conns])
        ax.set_xlabel("connections (each peer's concurrency knob)", fontsize=8)
        ax.set_ylabel("MB/s (median)", fontsize=8)
        ax.set_title(result["workloads"][w]["describe"], fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"High-latency profile: +{sh['delay_ms']:g} ms RTT, {sh['rate_bytes_s'] / 1e6:g} MB/s "
        f"per connection — {_title(result)}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
