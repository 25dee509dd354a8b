"""One comparison report from the committed benchmark results: tables, learning curves, throughput, overlays.

Reads every ``benchmarks/*/results*.csv`` table (one row per method × budget × seed, with ``score``,
``mean_f1`` and per-class F1 columns named ``F1 <class>`` or ``f1:<class>``; the budget in a ``budget``
column such as ``1%`` / ``shots5`` / ``0 labels``, or a ``shots`` column; a table with neither, such as
one row per method and data set, is shown as it is, without per-class recall and precision), ``benchmarks/throughput/
results*.csv`` and the overlay PNGs the benchmarks leave in their folders, and writes ``report.md`` with
PNG figures.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

F1_PREFIXES = ("F1 ", "f1:")


def _budget_x(budget: str) -> tuple[float, str]:
    """``1%`` → (1, '% of training volume'); ``shots5`` / ``5 shots`` → (5, 'particles per class')."""
    text = str(budget).strip()
    if text.endswith("%"):
        return float(text[:-1]), "% of training volume annotated"
    match = re.search(r"(\d+)", text)
    if "shot" in text and match:
        return float(match.group(1)), "annotated particles per class"
    return 0.0, "zero labels"


def load_results(path) -> pd.DataFrame:
    """A benchmark table with normalised columns: benchmark, method, budget, x, x_unit, seed, score, mean_f1, F1 <class>."""
    path = Path(path)
    frame = pd.read_csv(path)
    frame = frame.rename(columns={c: "F1 " + c[len(p) :] for c in frame.columns for p in F1_PREFIXES if c.startswith(p)})
    if "budget" not in frame.columns:
        if "shots" not in frame.columns:
            raise ValueError(f"{path}: a results table needs a 'budget' or 'shots' column")
        frame["budget"] = [f"shots{int(s)}" if int(s) else "0 labels" for s in frame["shots"]]
    missing = {"method", "seed", "score", "mean_f1"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    parsed = [_budget_x(b) for b in frame["budget"]]
    frame["x"] = [p[0] for p in parsed]
    frame["x_unit"] = [p[1] for p in parsed]
    frame["benchmark"] = benchmark_name(path)
    return frame


def benchmark_name(path: Path) -> str:
    """``label_efficiency`` for ``.../label_efficiency/results_cpu.csv`` and ``.../few_shot/results/results.csv``."""
    return path.parent.parent.name if path.parent.name == "results" else path.parent.name


def result_tables(root: Path, suffix: str) -> list[Path]:
    """``results*`` files of each benchmark folder (or its ``results/`` sub-folder)."""
    return sorted({*root.glob(f"*/results*{suffix}"), *root.glob(f"*/results/results*{suffix}")})


def summary_markdown(frame: pd.DataFrame) -> str:
    """Methods × budgets: CZII score, mean F1 (mean ± std over seeds) and per-class F1."""
    f1_columns = [c for c in frame.columns if c.startswith("F1 ")]
    order = frame.drop_duplicates(["budget", "method"])[["budget", "method"]].itertuples(index=False)
    header = "| budget | method | seeds | CZII score | mean F1 | " + " | ".join(c[3:] for c in f1_columns) + " |"
    lines = [header, "|---" * (5 + len(f1_columns)) + "|"]
    for budget, method in order:
        g = frame[(frame.budget == budget) & (frame.method == method)]
        cells = [str(budget), str(method), str(len(g)), _pm(g.score), _pm(g.mean_f1)] + [f"{g[c].mean():.2f}" for c in f1_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def frame_markdown(frame: pd.DataFrame) -> str:
    """A plain Markdown table of a data frame."""
    rows = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|---" * len(frame.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _pm(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def learning_curves(frame: pd.DataFrame, out, title: str) -> Path:
    """Mean F1 against the label budget, one line per method, error bars = std over seeds; the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = [u for u in frame.x_unit.unique() if u != "zero labels"]
    fig, axes = plt.subplots(1, len(units), figsize=(5.5 * len(units), 4), dpi=110, sharey=True, squeeze=False)
    axes = axes[0]
    for ax, unit in zip(axes, units):
        part = frame[frame.x_unit == unit]
        for method, g in part.groupby("method", sort=False):
            stats = g.groupby("x").mean_f1.agg(["mean", "std"]).fillna(0.0).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=method)
        floor = frame[frame.x_unit == "zero labels"].mean_f1
        if len(floor):
            ax.axhline(floor.mean(), color="k", ls="--", lw=1, label="blob floor (0 labels)")
        ax.set_xscale("log")
        ax.set_xlabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean F1 (scored classes, test split)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def throughput_figure(frame: pd.DataFrame, out) -> Path:
    """Seconds per full-size tomogram per bundle and device, optimised path beside the plain MONAI path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.bundle}\n{r.device}" for r in frame.itertuples()]
    positions = np.arange(len(frame))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(frame)), 3.5), dpi=110)
    ax.bar(positions - 0.2, frame["plain_s"], 0.4, label="plain sliding_window_inference (fp32, sw_batch_size=1)")
    ax.bar(positions + 0.2, frame["bundle_s"], 0.4, label="bundle inference")
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel("seconds per tomogram (read → picks)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_report(out, benchmarks_root) -> Path:
    """Write ``out/report.md`` and its figures from the result tables under ``benchmarks_root``.

    Args:
        out: report folder.
        benchmarks_root: folder with one sub-folder per benchmark.
    """
    out, root = Path(out), Path(benchmarks_root)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    def link(path: Path) -> str:
        return os.path.relpath(path.resolve(), out.resolve())

    sections = ["# cryoet-monai: results", "", f"Generated by `cryoet-monai report` from the result tables under `{link(root)}`.", ""]
    tables = [p for p in result_tables(root, ".csv") if benchmark_name(p) != "throughput"]
    for table in tables:
        name = benchmark_name(table)
        sections += [f"## {name} — [`{table.relative_to(root)}`]({link(table)})", ""]
        notes = root / name / "README.md"
        if notes.is_file():
            sections += [f"How it was run, and its status: [{notes.relative_to(root)}]({link(notes)})", ""]
        if not {"budget", "shots"} & set(pd.read_csv(table, nrows=0).columns):  # one row per method and data set
            frame = pd.read_csv(table)
            sections += [frame_markdown(frame[[c for c in frame.columns if not c.endswith((" recall", " precision"))]]), ""]
            continue
        frame = load_results(table)
        sections += [summary_markdown(frame), ""]
        if (frame.x_unit != "zero labels").any():
            curve = learning_curves(frame, out / "figures" / f"{name}_{table.stem}_curves.png", f"{name}: mean F1 vs label budget")
            sections += [f"![learning curves]({curve.relative_to(out)})", ""]
    for table in sorted(root.glob("throughput/results*.csv")):
        frame = pd.read_csv(table)
        figure = throughput_figure(frame, out / "figures" / f"throughput_{table.stem}.png")
        sections += [f"## Throughput — `{table.relative_to(root)}`", "", frame_markdown(frame), "", f"![throughput]({figure.relative_to(out)})", ""]
    tabled = {benchmark_name(p) for p in tables}
    other = [p for p in result_tables(root, ".md") if benchmark_name(p) not in tabled]
    if other:
        sections += ["## Other benchmark tables", ""] + [f"- [{p.relative_to(root)}]({link(p)})" for p in other] + [""]
    overlays = sorted(root.glob("*/overlay*.png"))
    if overlays:
        sections += ["## Pick overlays", "", "Solid circles: true positives; dashed: false positives; crosses: missed particles.", ""]
        for png in overlays:
            target = out / "figures" / f"{png.parent.name}_{png.name}"
            shutil.copyfile(png, target)
            sections += [f"![{png.parent.name}]({target.relative_to(out)})", ""]
    path = out / "report.md"
    path.write_text("\n".join(sections) + "\n")
    return path
