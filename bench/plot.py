"""PNG charts of the benchmark results, for docs/performance.md: bench/results.json (written by
`python -m bench.run`) and, when they exist, bench/api_results.json (`python -m
bench.api_load`) and bench/listing_results.json (`python -m bench.listing`).

    python -m bench.plot [--results bench/results.json] [--api-results bench/api_results.json]
                         [--listing-results bench/listing_results.json] [--out docs/img]

A chart whose figures are not in the results (no HTTP steps, no scaling run, no latency runs,
no API results) is left out rather than drawn empty.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

ROOT = Path(__file__).resolve().parent.parent
SAGA, PLAIN = "tab:blue", "tab:gray"
KINDS = {"": "no-op steps", "http_": "HTTP steps"}

Bar = tuple[float, float, float]  # median, and how far below and above it min and max are


def spread(record: dict[str, Any], key: str) -> Bar:
    """A figure of a summarized record (bench.run.summarize) as a bar: its median and the
    distance to min and max across repeats; no distance for a record without a spread."""
    span = record.get("spread", {}).get(key)
    if span is None:
        return float(record[key]), 0.0, 0.0
    return span["median"], span["median"] - span["min"], span["max"] - span["median"]


def ratio_label(record: dict[str, Any], key: str) -> str:
    median, below, above = spread(record, key)
    if below == above == 0:
        return f"ratio {median:.2f}"
    return f"ratio {median:.2f}\n({median - below:.2f}-{median + above:.2f})"


def paired_bars(ax: Axes, labels: list[str], saga: list[Bar], plain: list[Bar]) -> None:
    """Saga and plain-chain bars side by side per group, whiskers from min to max."""
    width = 0.38
    for offset, bars, colour, name in (
        (-width / 2, saga, SAGA, "saga"),
        (width / 2, plain, PLAIN, "plain Celery chain"),
    ):
        whiskers = [[b[1] for b in bars], [b[2] for b in bars]]
        ax.bar(
            [i + offset for i in range(len(bars))],
            [b[0] for b in bars],
            width,
            yerr=whiskers if any(map(any, whiskers)) else None,
            capsize=4,
            color=colour,
            label=name,
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.legend(loc="upper left", ncols=2, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def annotate(ax: Axes, texts: list[str], tops: list[float]) -> None:
    """Write each group's ratio above its taller bar, leaving room for it."""
    for i, (text, top) in enumerate(zip(texts, tops, strict=True)):
        ax.annotate(
            text,
            (i, top),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, max(tops) * 1.4)  # room for the ratios and the legend


def throughput_chart(ax: Axes, records: list[tuple[str, dict[str, Any], str]]) -> None:
    """`records`: (group label, summarized record, key prefix of its figures)."""
    saga = [spread(r, f"{p}saga_per_s") for _, r, p in records]
    plain = [spread(r, f"{p}plain_chains_per_s") for _, r, p in records]
    paired_bars(ax, [label for label, _, _ in records], saga, plain)
    annotate(
        ax,
        [ratio_label(r, f"{p}throughput_ratio_saga_over_plain") for _, r, p in records],
        [max(s[0] + s[2], c[0] + c[2]) for s, c in zip(saga, plain, strict=True)],
    )
    ax.set_ylabel("five-step sagas (or chains) per second")


def repeats_note(record: dict[str, Any]) -> str:
    repeat = record.get("repeat", 1)
    return f"median of {repeat} runs, whiskers min-max" if repeat > 1 else "one run"


def plot_throughput(results: dict[str, Any]) -> Figure | None:
    runs = results.get("runs", [])
    records = [
        (f"{kind}\n{run['persistence']}", run, prefix)
        for prefix, kind in KINDS.items()
        for run in runs
        if f"{prefix}saga_per_s" in run
    ]
    if not records:
        return None
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    throughput_chart(ax, records)
    ax.set_title(
        f"Throughput of {runs[0]['sagas']} five-step sagas vs as many plain Celery chains\n"
        f"worker {runs[0]['pool']}, {results['machine']['cpus']} CPUs ({repeats_note(runs[0])})",
        fontsize=10,
    )
    return fig


def plot_scaling(results: dict[str, Any]) -> Figure | None:
    scaling = results.get("scaling")
    if not scaling:
        return None
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    points = scaling["points"]
    throughput_chart(ax, [(p["pool"], p, "") for p in points])
    ax.set_xlabel("Celery worker pool and concurrency")
    ax.set_title(
        f"No-op throughput by worker pool: {scaling['sagas']} sagas per point, "
        f"{scaling['persistence']}, {results['machine']['cpus']} CPUs ({repeats_note(points[0])})",
        fontsize=10,
    )
    return fig


def cdf(ax: Axes, samples: list[float], colour: str, name: str) -> None:
    values = sorted(samples)
    fractions = [(i + 1) / len(values) for i in range(len(values))]
    ax.step(values, fractions, where="post", color=colour, label=name)


def pooled(run: dict[str, Any], key: str) -> list[float]:
    """Latency samples of every repeat of a run, together."""
    repeats = run.get("repeats", [run])
    return [sample for repeat in repeats for sample in repeat.get(key, [])]


def plot_latency(results: dict[str, Any]) -> Figure | None:
    runs = [r for r in results.get("runs", []) if pooled(r, "saga_latency_samples_ms")]
    if not runs:
        return None
    fig = Figure(figsize=(5 * len(runs), 4.5), layout="constrained")
    axes = fig.subplots(1, len(runs), sharex=True, sharey=True, squeeze=False)[0]
    for ax, run in zip(axes, runs, strict=True):
        for key, colour, name in (
            ("saga_latency", SAGA, "saga"),
            ("plain_latency", PLAIN, "plain Celery chain"),
        ):
            p = run[f"{key}_ms"]
            cdf(
                ax,
                pooled(run, f"{key}_samples_ms"),
                colour,
                f"{name}: p50 {p['p50']:.1f}, p99 {p['p99']:.1f} ms",
            )
        ax.set_title(run["persistence"], fontsize=10)
        ax.set_xlabel("submit to end, ms")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("fraction of runs")
    fig.suptitle(
        f"One-at-a-time latency of a five-step no-op saga vs a plain chain "
        f"({runs[0]['latency_runs']} runs each per repeat, {runs[0].get('repeat', 1)} "
        "repeats pooled)",
        fontsize=10,
    )
    return fig


def plot_api(api: dict[str, Any]) -> Figure | None:
    """p50 and p99 of every endpoint in api_results.json."""
    endpoints = dict(percentiles(api, ""))
    if not endpoints:
        return None
    fig = Figure(figsize=(max(6, 2.2 * len(endpoints)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    for offset, key, colour in (
        (-width / 2, "p50_ms", "tab:green"),
        (width / 2, "p99_ms", "tab:red"),
    ):
        values = [v[key] for v in endpoints.values()]
        bars = ax.bar(
            [i + offset for i in range(len(values))],
            values,
            width,
            color=colour,
            label=key.removesuffix("_ms"),
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(endpoints)), [name.replace(".", "\n") for name in endpoints])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.axhline(15, color="tab:red", linestyle="--", linewidth=1, label="target: POST p99 15 ms")
    ax.set_ylabel("ms (log scale)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    rate = api.get("rate")
    ax.set_title(f"API latency at {rate:g} requests/s" if rate else "API latency", fontsize=10)
    return fig


def plot_listing(listing: dict[str, Any]) -> Figure | None:
    """`GET /saga` p50 and p99 per query, one group of bars per number of sagas stored."""
    sizes = listing.get("sizes") or []
    if not sizes:
        return None
    names = list(sizes[0]["queries"])
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / (2 * len(sizes))
    colours = ("tab:blue", "tab:orange", "tab:purple", "tab:brown")
    for k, size in enumerate(sizes):
        for j, key in enumerate(("p50_ms", "p99_ms")):
            offset = (2 * k + j) * width - 0.4 + width / 2
            values = [size["queries"][name][key] for name in names]
            ax.bar(
                [i + offset for i in range(len(names))],
                values,
                width,
                color=colours[k % len(colours)],
                alpha=0.55 if key == "p50_ms" else 1.0,
                label=f"{size['sagas']:,} sagas, {key.removesuffix('_ms')}",
            )
    ax.axhline(20, color="tab:red", linestyle="--", linewidth=1, label="target 20 ms")
    ax.set_xticks(range(len(names)), [n.replace(" + ", "\n+ ") for n in names], fontsize=8)
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("GET /saga (page of 50) with many finished sagas stored, AOF", fontsize=10)
    return fig


def percentiles(node: Any, path: str) -> Iterator[tuple[str, dict[str, float]]]:
    """Every entry with p50_ms and p99_ms, at any depth, named by its path: the API benchmark
    adds endpoints and may group them."""
    if not isinstance(node, dict):
        return
    if {"p50_ms", "p99_ms"} <= set(node):
        yield path, node
        return
    for key, value in node.items():
        yield from percentiles(value, f"{path}.{key}" if path else key)


def save(fig: Figure | None, path: Path) -> Path | None:
    if fig is None:
        return None
    FigureCanvasAgg(fig)  # the Agg renderer: files only, no display needed
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--api-results", default=str(ROOT / "bench" / "api_results.json"))
    parser.add_argument("--listing-results", default=str(ROOT / "bench" / "listing_results.json"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads(Path(args.results).read_text())
    charts: dict[str, Callable[[], Figure | None]] = {
        "throughput.png": lambda: plot_throughput(results),
        "latency_cdf.png": lambda: plot_latency(results),
        "scaling.png": lambda: plot_scaling(results),
    }
    api = Path(args.api_results)
    if api.exists():
        charts["api_latency.png"] = lambda: plot_api(json.loads(api.read_text()))
    listing = Path(args.listing_results)
    if listing.exists():
        charts["listing.png"] = lambda: plot_listing(json.loads(listing.read_text()))
    for name, draw in charts.items():
        written = save(draw(), out / name)
        print(f"{written or name + ': no figures for it, left out'}")


if __name__ == "__main__":
    main()
