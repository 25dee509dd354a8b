"""Label-efficiency benchmark of the SemiETPicker bundle (supervised vs teacher–student) on a synthetic CZII replica.

For every label budget (share of the training volume, or N particles per class) and seed, a budget
manifest is drawn (`budget_manifest`), a model is trained with `train.yaml` (supervised) or
`train_semi.yaml` (teacher–student, plus DropBlock / multi-view ablations at the smallest budget),
per-class thresholds are tuned on the validation split (`evaluate.yaml`), and the test split is picked
(`inference.yaml`) and scored with the CZII metric. Teacher–student follows the usual burn-in recipe:
it starts from the supervised model of the same budget and seed (whose weights the teacher keeps: no EMA
warm-up with `pretrained`); a class's pseudo-label threshold is the lowest at which that model's validation
picks are at least 80 % right (`--pseudo-precision`; a class never that precise gets no pseudo-particles), and its trusted
background lies below half that model's F1-best threshold (see `burn_in`). The zero-label blob floor is
scored once. Every finished step leaves its output, so an interrupted run resumes.

The CZII thresholds maximise F-beta 4, which favours recall, so the F1 of those picks understates what the
model does at an F1 operating point. Each row therefore also reports mean F1 at per-class thresholds tuned for
F1 on the validation tomogram, applied to the test split's candidates (picked once at the lowest threshold and
filtered, as the thresholds were tuned; this keeps a few per cent more picks than picking at each threshold, since
hill climbing from the extra low starts reaches a few more maxima).

    cryoet-monai synth --out DATA --preset czii-bin2 --seed 0 --templates TEMPLATES --layout LAYOUT
    python benchmarks/label_efficiency/run.py --data DATA --out RUNS --preset cpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.cli import parse_overrides
from cryoet_monai.data.budgets import budget_manifest
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks, write_picks
from cryoet_monai.inference.blobs import pick_with_blobs
from cryoet_monai.inference.thresholds import DEFAULT_CANDIDATES, apply_thresholds, precision_thresholds, tune_thresholds
from cryoet_monai.metrics import score_picks
from cryoet_monai.runner import run_bundle

HERE = Path(__file__).resolve().parent
PRESETS = {
    # 2 CPU cores: 300 iterations on smaller crops, no validation during training (thresholds are tuned after
    # it), no window overlap at inference; teacher–student continues the supervised model for 150 iterations
    # on 1 unlabeled tomogram crop pair per step, so that the whole grid fits in an hour with --workers 2.
    "cpu": {
        "train": {"max_epochs": 10, "epoch_length": 30, "crop_size": [32, 48, 48], "val_interval": 0},
        "semi": {"max_epochs": 5, "rampup_iterations": 50, "unlabeled_batch_size": 1},
        "sw_batch_size": 4,
        "overlap": 0.0,
    },
    # the cpu preset at 4x the iterations (1200 supervised, 600 teacher-student), for the budgets where it matters.
    "cpu-long": {
        "train": {"max_epochs": 40, "epoch_length": 30, "crop_size": [32, 48, 48], "val_interval": 0},
        "semi": {"max_epochs": 20, "rampup_iterations": 200, "unlabeled_batch_size": 1},
        "sw_batch_size": 4,
        "overlap": 0.0,
    },
    # one GPU.
    "gpu": {
        "train": {"max_epochs": 40, "epoch_length": 100, "crop_size": [32, 64, 64], "val_interval": 5},
        "semi": {"rampup_iterations": 1000},
        "sw_batch_size": 16,
        "overlap": 0.25,
    },
}
# the generalist pre-trained weights (benchmarks/pretraining) the "from the generalist" rows fine-tune (--generalist)
GENERALIST = bundle_dir("semietpicker") / "models" / "generalist" / "model.pt"
# method: (config, overrides, start). Supervised rows start from random weights ("scratch") or from the generalist's
# backbone with a fresh head; a teacher–student row starts from the supervised model of the same start.
METHODS = {
    "supervised": ("train", {}, "scratch"),
    "teacher-student": ("train_semi", {}, "scratch"),
    "teacher-student, no DropBlock": ("train_semi", {"dropblock#prob": 0.0}, "scratch"),
    "teacher-student, single view": ("train_semi", {"teacher_views": [0]}, "scratch"),
    "supervised, from the generalist": ("train", {}, "generalist"),
    "teacher-student, from the generalist": ("train_semi", {}, "generalist"),
    # the generalist's backbone with an output head started afresh instead of from the channels of the nearest radius
    "supervised, from the generalist, fresh head": ("train", {"size_matched_head": False}, "generalist"),
}
ABLATIONS = ("teacher-student, no DropBlock", "teacher-student, single view", "supervised, from the generalist, fresh head")
SUPERVISED = {"scratch": "supervised", "generalist": "supervised, from the generalist"}
# the weights a run is scored with: the last ones, or those of the best validation during training (BestModelSaver)
WEIGHTS = {"last": "model.pt", "best": "model_best.pt"}


def budget_path(full: Path, out: Path, budget: str, seed: int) -> Path:
    """The manifest of a budget (``1%``, ``shots5``, ``100%`` = the full manifest)."""
    if budget == "100%":
        return full
    path = out / "budgets" / f"{budget.replace('%', 'pct')}_seed{seed}.json"
    if not path.is_file():
        if budget.startswith("shots"):
            budget_manifest(full, path, shots=int(budget[5:]), seed=seed)
        else:
            budget_manifest(full, path, fraction=float(budget.rstrip("%")) / 100, seed=seed)
    return path


def run_dir(out: Path, budget: str, method: str, seed: int) -> Path:
    return out / "runs" / budget.replace("%", "pct") / method.replace(" ", "_").replace(",", "") / f"seed{seed}"


def burn_in(full: Path, supervised: Path, min_precision: float, weights: str) -> dict:
    """Overrides that start teacher–student from a finished supervised run (its ``weights`` and validation picks).

    A class's pseudo-label threshold is the lowest at which the supervised model's validation picks of that
    class are at least ``min_precision`` right; a class that never gets there (not learned) gets no
    pseudo-particles (threshold 1). The trusted background of a class lies below half its F1-best threshold.
    """
    manifest = load_manifest(full)
    picks = read_picks(supervised / "validation" / "picks.csv", ndim=3)
    precise = precision_thresholds(picks, manifest, "validation", min_precision)
    best, _ = tune_thresholds(picks, manifest, "validation", beta=1.0)
    return {
        "pretrained": str(supervised / "models" / weights),
        "pseudo_threshold": [1.0 if precise[name] is None else precise[name] for name in manifest.class_names],
        "pseudo_negative_threshold": [best[name] / 2 for name in manifest.class_names],
    }


def scored(path: Path, full: Path, pred: Path, row: dict) -> dict:
    """Score picks once and keep the result as JSON beside them."""
    if not path.is_file():
        result = score_picks(read_picks(pred, ndim=3), load_manifest(full), "test")
        path.write_text(json.dumps({**row, **result}, indent=2))
    return json.loads(path.read_text())


def scored_at_f1_thresholds(run: Path, full: Path) -> float:
    """Test mean F1 at per-class thresholds tuned for F1 on the validation picks (NaN until the test candidates exist)."""
    path, candidates = run / "metrics_f1.json", run / "test_candidates" / "picks.csv"
    if not path.is_file():
        if not candidates.is_file():
            return float("nan")
        manifest = load_manifest(full)
        thresholds, _ = tune_thresholds(read_picks(run / "validation" / "picks.csv", ndim=3), manifest, "validation", beta=1.0)
        result = score_picks(apply_thresholds(read_picks(candidates, ndim=3), thresholds), manifest, "test")
        path.write_text(json.dumps({"thresholds": thresholds, **result}, indent=2))
    return json.loads(path.read_text())["mean_f1"]


def train_tune_test(full: Path, manifest: Path, run: Path, config: str, overrides: dict, seed: int, preset: dict, weights: str) -> None:
    """Train, tune thresholds on validation, pick the test split with ``weights`` (each step skipped when done).

    The test split is picked once, at the lowest candidate threshold; the picks at the tuned thresholds are those
    candidates that reach them (the rule the thresholds were tuned with), and the F1 column applies its own thresholds
    to the same candidates.
    """
    model = run / "models" / weights
    thresholds = run / "thresholds.json"
    if not (run / "models" / "model.pt").is_file():  # written only when training completes
        train_keys = {**preset["train"], **(preset["semi"] if config == "train_semi" else {})}
        began = resource.getrusage(resource.RUSAGE_SELF)
        run_bundle("semietpicker", config, {"manifest": str(manifest), "output_dir": str(run), "seed": seed, **train_keys, **overrides})
        ended = resource.getrusage(resource.RUSAGE_SELF)
        (run / "training_cpu_seconds.txt").write_text(f"{ended.ru_utime + ended.ru_stime - began.ru_utime - began.ru_stime:.0f}\n")
    if not model.is_file():
        raise SystemExit(f"{run}: training left no {weights}; the best validation weights need validation during training (--train-set val_interval=5)")
    common = {"manifest": str(full), "model_path": str(model), "thresholds_path": str(thresholds), "sw_batch_size": preset["sw_batch_size"], "overlap": preset["overlap"]}
    if not thresholds.is_file():
        run_bundle("semietpicker", "evaluate", {**common, "split": "validation", "output_dir": str(run / "validation")})
    candidates = run / "test_candidates" / "picks.csv"
    if not candidates.is_file():
        lowest = [float(min(DEFAULT_CANDIDATES))] * len(load_manifest(full).class_names)
        run_bundle("semietpicker", "inference", {**common, "thresholds": lowest, "split": "test", "output_dir": str(run / "test_candidates")})
    if not (run / "test" / "picks.csv").is_file():  # the tuned thresholds on the same candidates, as they were tuned
        write_picks(apply_thresholds(read_picks(candidates, ndim=3), json.loads(thresholds.read_text())), run / "test" / "picks.csv")


def training_minutes(run: Path) -> float:
    """CPU minutes the run's training took (NaN for runs from before they were recorded)."""
    path = run / "training_cpu_seconds.txt"
    return float(path.read_text()) / 60 if path.is_file() else float("nan")


def run_chain(budget: str, seed: int, full: Path, out: Path, methods: list[str], ablation_budget: str, preset_name: str, collect_only: bool, start: float, pseudo_precision: float, train_settings: dict, semi_settings: dict, weights: str, generalist: Path) -> list[dict]:
    """Every method at one budget and seed, supervised first (teacher–student starts from it); the scored rows."""
    budget_manifest_path = budget_path(full, out, budget, seed)
    preset = PRESETS[preset_name]
    starts = {"scratch": {"pretrained": None}, "generalist": {"pretrained": str(generalist)}}
    records = []
    for method in methods:
        if method in ABLATIONS and budget != ablation_budget:
            continue
        config, overrides, origin = METHODS[method]
        supervised_settings = {**train_settings, **starts[origin]}
        overrides = {**supervised_settings, **overrides}
        run = run_dir(out, budget, method, seed)
        if collect_only and not (run / "test" / "picks.csv").is_file():
            continue
        print(f"[{time.time() - start:7.0f} s] {budget} {method} seed {seed}", flush=True)
        minutes = 0.0
        if config == "train_semi":
            supervised = run_dir(out, budget, SUPERVISED[origin], seed)
            if not (run / "models" / "model.pt").is_file():
                train_tune_test(full, budget_manifest_path, supervised, "train", supervised_settings, seed, preset, weights)
                overrides = {**overrides, **burn_in(full, supervised, pseudo_precision, weights), **semi_settings}
            minutes = training_minutes(supervised)
        train_tune_test(full, budget_manifest_path, run, config, overrides, seed, preset, weights)
        row = {"method": method, "budget": budget, "seed": seed, "preset": preset_name}
        record = scored(run / "metrics.json", full, run / "test" / "picks.csv", row)
        records.append({**record, "mean_f1_f1_thresholds": scored_at_f1_thresholds(run, full), "training_cpu_minutes": minutes + training_minutes(run)})
    return records


def summarise(records: list[dict], class_names: list[str], weights: dict) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {"method": r["method"], "budget": r["budget"], "seed": r["seed"], "score": r["score"], "mean_f1": r["mean_f1"],
               "mean_f1_f1_thresholds": r.get("mean_f1_f1_thresholds", r["mean_f1"]), "training_cpu_minutes": r.get("training_cpu_minutes", 0.0)}
        row.update({f"f1:{c}": r["classes"][c]["f1"] for c in class_names})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, class_names: list[str], weights: dict) -> str:
    scored_classes = [c for c in class_names if weights[c] > 0]
    grouped = frame.groupby(["budget", "method"], sort=False)
    lines = [
        "| budget | method | seeds | CZII score | mean F1 | mean F1, F1 thresholds | training CPU min | " + " | ".join(scored_classes) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(scored_classes),
    ]
    for (budget, method), g in grouped:
        cells = [budget, method, str(len(g))] + [f"{g[k].mean():.3f} ± {g[k].std(ddof=0):.3f}" for k in ("score", "mean_f1", "mean_f1_f1_thresholds")]
        cells.append("–" if g["training_cpu_minutes"].isna().all() else f"{g['training_cpu_minutes'].mean():.1f}")
        cells += [f"{g[f'f1:{c}'].mean():.3f}" for c in scored_classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(frame: pd.DataFrame, column: str = "mean_f1") -> list[str]:
    """The issue's targets, checked on the mean over seeds of a mean-F1 ``column`` ("not run" where a row is missing)."""
    mean = frame.groupby(["budget", "method"])[column].mean()

    def get(budget, method):
        return mean.get((budget, method), float("nan"))

    def verdict(value, ok):
        return "not run" if pd.isna(value) else ("met" if ok else "MISSED")

    ts1, sup1 = get("1%", "teacher-student"), get("1%", "supervised")
    ts10, sup100 = get("10%", "teacher-student"), get("100%", "supervised")
    floor = get("0 labels", "blob floor")
    trained = frame[frame.method != "blob floor"].groupby(["budget", "method"])[column].mean()
    tuned1, tuned_ts1 = get("1%", "supervised, from the generalist"), get("1%", "teacher-student, from the generalist")
    score = frame.groupby(["budget", "method"])["score"].mean()
    tuned1_score = score.get(("1%", "supervised, from the generalist"), float("nan"))
    scratch100_score = score.get(("100%", "supervised"), float("nan"))
    return [
        f"- teacher–student ≥ supervised + 0.10 mean F1 at 1 %: {ts1:.3f} vs {sup1:.3f} + 0.10 → {verdict(ts1 + sup1, ts1 >= sup1 + 0.10)}",
        f"- teacher–student at 10 % within 0.05 of supervised at 100 %: {ts10:.3f} vs {sup100:.3f} → {verdict(ts10 + sup100, ts10 >= sup100 - 0.05)}",
        f"- every trained row above the blob floor ({floor:.3f}): lowest trained row {trained.min():.3f} → {verdict(trained.min(), trained.min() > floor)}",
        f"- 1 % fine-tuned from the generalist: CZII score ≥ 0.60 and ≥ the from-scratch 100 % model of the same schedule: {tuned1_score:.3f} vs {scratch100_score:.3f} → {verdict(tuned1_score + scratch100_score, tuned1_score >= max(0.60, scratch100_score))}",
        f"- teacher–student from the generalist ≥ supervised from it + 0.05 mean F1 at 1 %: {tuned_ts1:.3f} vs {tuned1:.3f} + 0.05 → {verdict(tuned_ts1 + tuned1, tuned_ts1 >= tuned1 + 0.05)}",
    ]


def synth_command(data: Path) -> str:
    """The ``cryoet-monai synth`` command that made ``data``, from its ``synthesis.json``."""
    record = json.loads((data / "synthesis.json").read_text())
    sources = "".join(f" --{key} {record[key]}" for key in ("templates", "layout") if record.get(key))
    return f"cryoet-monai synth --out {data} --preset {record['preset']} --seed {record['seed']}{sources}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the synthetic data's manifest.json")
    parser.add_argument("--out", type=Path, required=True, help="folder for budgets and runs (resumable)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--budgets", nargs="+", default=["1%", "5%", "10%", "100%", "shots5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--results", type=Path, default=HERE / "results_cpu.md", help="Markdown table to write (a CSV beside it)")
    parser.add_argument("--workers", type=int, default=1, help="budget/seed chains run in parallel, the cores shared among them")
    parser.add_argument("--pseudo-precision", type=float, default=0.8, help="share of a class's validation picks that must be right at its pseudo-label threshold (burn_in)")
    parser.add_argument("--train-set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="override train.yaml / train_semi.yaml settings of every trained row, e.g. loss#_target_=cryoet_monai.losses.HeatmapMSELoss (with a new --out: finished runs are reused); repeatable")
    parser.add_argument("--semi-set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="override train_semi.yaml settings of the teacher–student rows, e.g. ema_decay=0.999; repeatable")
    parser.add_argument("--checkpoint", choices=sorted(WEIGHTS), default="last", help="score the last weights (model.pt) or those of the best validation during training (model_best.pt; needs --train-set val_interval=N); teacher–student starts from the same choice of the supervised run")
    parser.add_argument("--generalist", type=Path, default=GENERALIST, help="pre-trained weights the 'from the generalist' rows fine-tune")
    parser.add_argument("--collect-only", action="store_true", help="only tabulate the rows that have finished; run nothing")
    args = parser.parse_args(argv)
    if not args.collect_only and not args.generalist.is_file() and any(METHODS[m][2] == "generalist" for m in args.methods):
        parser.error(f"no generalist weights at {args.generalist}: give --generalist, or leave out the 'from the generalist' methods")

    full = (args.data / "manifest.json").resolve()
    manifest = load_manifest(full)
    preset = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    blob_dir = args.out / "blob"
    if not (blob_dir / "picks.csv").is_file() and not args.collect_only:
        write_picks(pick_with_blobs(full, "test"), blob_dir / "picks.csv")
    records = [scored(blob_dir / "metrics.json", full, blob_dir / "picks.csv", {"method": "blob floor", "budget": "0 labels", "seed": 0})]

    chains = [(budget, seed) for budget in args.budgets for seed in args.seeds]
    train_settings, semi_settings = (parse_overrides([f"--{setting}" for setting in settings]) for settings in (args.train_set, args.semi_set))
    work = partial(run_chain, full=full, out=args.out, methods=args.methods, ablation_budget=args.budgets[0], preset_name=args.preset, collect_only=args.collect_only, start=start, pseudo_precision=args.pseudo_precision, train_settings=train_settings, semi_settings=semi_settings, weights=WEIGHTS[args.checkpoint], generalist=args.generalist.resolve())
    failed = []
    if args.workers > 1 and not args.collect_only:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            futures = {pool.submit(work, budget, seed): (budget, seed) for budget, seed in chains}
            for future in as_completed(futures):
                try:
                    records += future.result()
                except Exception as err:  # the other chains go on; the table keeps what finished
                    failed.append(futures[future])
                    print(f"[{time.time() - start:7.0f} s] {futures[future][0]} seed {futures[future][1]} FAILED: {type(err).__name__}: {err}", flush=True)
    else:
        records += [record for budget, seed in chains for record in work(budget, seed)]
    records[1:] = sorted(records[1:], key=lambda r: (args.budgets.index(r["budget"]), r["seed"], args.methods.index(r["method"])))

    names = manifest.class_names
    weights = {c.name: c.weight for c in manifest.classes}
    frame = summarise(records, names, weights)
    frame.to_csv(args.results.with_suffix(".csv"), index=False)
    text = [
        f"# SemiETPicker label efficiency ({args.preset} preset)",
        "",
        f"Data: `{args.data}` (synthetic CZII replica, split by tomogram: {len(manifest.items('training'))} training, "
        f"{len(manifest.items('unlabeled'))} unlabeled, {len(manifest.items('validation'))} validation, {len(manifest.items('test'))} test). "
        f"Preset `{args.preset}`: {preset}; pseudo-label precision {args.pseudo_precision}; training settings {train_settings or 'as the configs'}; teacher–student settings {semi_settings or 'as train_semi.yaml'}; scored weights `{WEIGHTS[args.checkpoint]}`; generalist weights `{args.generalist}`. Thresholds tuned on validation; scores on test. Mean ± std over seeds {args.seeds}.",
        "Per-class columns are F1 (scored classes) at the CZII thresholds. Training CPU minutes: the training of the row (a "
        "teacher–student row's supervised start included; the generalist's one-off pre-training not; – where not recorded). "
        + ("Rows collected from finished runs (--collect-only)." if args.collect_only else f"Wall time: {(time.time() - start) / 60:.1f} min."),
        "",
        markdown(frame, names, weights),
        "",
        "Targets, mean F1 at the CZII (F-beta 4) thresholds:",
        *targets(frame),
        "",
        "Targets, mean F1 at thresholds tuned for F1 on validation (the blob floor has no thresholds to tune):",
        *targets(frame, "mean_f1_f1_thresholds"),
        "",
        f"Reproduce: `{synth_command(args.data)}`, then `python benchmarks/label_efficiency/run.py "
        + shlex.join(sys.argv[1:] if argv is None else argv) + "`",
    ]
    args.results.write_text("\n".join(text) + "\n")
    print("\n".join(text))
    if failed:
        raise SystemExit(f"{len(failed)} budget/seed chain(s) failed: {failed}; their rows are missing (rerun: finished runs are reused)")


if __name__ == "__main__":
    main()
