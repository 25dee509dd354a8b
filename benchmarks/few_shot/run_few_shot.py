"""Few-shot benchmark of the SaSi bundle: N particles per class, ablation rows, CZII score and F1 on `test`.

Rows: plain U-Net; + contrastive pre-training; + volume infill; + consistency guidance; + pre-training +
infill (SaSi without consistency); full SaSi (all three); the plain U-Net and SaSi's infill + consistency
started from the generalist U-Net (``--generalist``, benchmarks/pretraining) instead of random weights; the
SemiETPicker bundle's supervised ``train.yaml`` on the same budget; and the zero-label blob floor
(`cryoet-monai baseline`). Budgets come from
``budget_manifest(shots=N, seed=s)``; hyper-parameters are fixed in advance (no tuning on the test split).
Both bundles tune per-class pick thresholds on `validation`, as their ``evaluate.yaml`` does; the SaSi rows
also keep the score with every component (``untuned``). The encoder is pre-trained once (label-free) and
shared by the rows that use it. Data: a synthetic preset (``--dataset czii-bin2`` or ``shrec``), built in ``--data`` when
missing. Runs resume: a finished run (its metrics.json exists) is not repeated.

    python benchmarks/few_shot/run_few_shot.py --data /tmp/sasi_bench/czii-bin2 --out /tmp/sasi_bench/runs
    python benchmarks/few_shot/run_few_shot.py --dataset shrec --templates ../shared/data/templates_10A \
        --data /tmp/sasi_bench/shrec --out /tmp/sasi_bench/shrec_runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import pandas as pd
from monai.bundle import run

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.cli import parse_overrides
from cryoet_monai.data.budgets import budget_manifest
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks, write_picks
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.inference.thresholds import apply_thresholds, save_thresholds, tune_thresholds
from cryoet_monai.metrics import score_picks
from cryoet_monai.runner import explicit_none, run_bundle

CONFIGS = bundle_dir("sasi") / "configs"
ROWS = {  # row name: (pre-trained encoder, volume infill, consistency guidance, start from the generalist U-Net)
    "plain U-Net": (False, False, False, False),
    "+ pre-training": (True, False, False, False),
    "+ infill": (False, True, False, False),
    "+ consistency": (False, False, True, False),
    "+ pre-training + infill": (True, True, False, False),  # full SaSi without consistency guidance
    "SaSi (all)": (True, True, True, False),
    # the whole U-Net from the generalist weights (--generalist; benchmarks/pretraining), each class channel of the
    # output layer from the generalist channel of the nearest radius (train.yaml size_matched_head)
    "plain U-Net, from the generalist": (False, False, False, True),
    "SaSi infill + consistency, from the generalist": (False, True, True, True),
}
GENERALIST = bundle_dir("sasi") / "models" / "generalist" / "model.pt"
SEMIETPICKER = "SemiETPicker (supervised)"
# synthetic presets (5 tomograms: 2 training, 1 unlabeled, 1 validation, 1 test) and their result tables
RESULT_FILES = {"czii-bin2": "results.csv", "shrec": "results_shrec.csv"}
CPU_PRESET = {  # small enough for 2 CPU cores; the bundle's defaults are for a GPU
    "network": {"roi_size": [32, 48, 48], "features": [8, 8, 16, 32, 64, 8]},
    "pretrain": {"max_epochs": 1, "epoch_length": 40, "batch_size": 8, "learning_rate": 0.003},
    "train": {"max_epochs": 4, "epoch_length": 20, "batch_size": 2, "num_samples": 1, "learning_rate": 0.003, "consistency#weight": 1.0, "consistency#rampup_iterations": 20, "val_interval": 0},
    "inference": {"sw_batch_size": 8, "overlap": 0.25},
    # the SaSi rows' schedule (iterations, batch, crop, learning rate), no validation during training
    "semietpicker": {"max_epochs": 4, "epoch_length": 20, "batch_size": 2, "num_samples": 1, "learning_rate": 0.003, "val_interval": 0},
}


EVERY_COMPONENT = "$[0.0] * @num_classes"  # SaSi picking thresholds that keep every component (tuned afterwards)


def _run(config: str, **overrides) -> None:
    run(config_file=str(CONFIGS / f"{config}.yaml"), **explicit_none(overrides))


def pretrain(manifest: Path, out: Path) -> Path:
    encoder = out / "models" / "encoder.pt"
    if not encoder.is_file():
        _run("pretrain", manifest=str(manifest), output_dir=str(out), **CPU_PRESET["network"], **CPU_PRESET["pretrain"])
    return encoder


def timed_training(out: Path, train: Callable[[], None]) -> float:
    """Run ``train`` unless ``out`` already holds its finished model; return the training's wall time (s)."""
    record = out / "models" / "train_seconds.json"
    if not record.is_file():
        start = time.time()
        train()
        record.write_text(json.dumps(round(time.time() - start, 1)))
    return json.loads(record.read_text())


def validation_score(full: Path, out: Path) -> None:
    """Pick `validation` with a SaSi run's model, every component kept, and add that CZII score and mean F1 to its metrics."""
    metrics = json.loads((out / "metrics.json").read_text())
    if "val_score" in metrics:
        return
    val = out / "validation"
    model = str(out / "models" / "model.pt")
    _run("inference", manifest=str(full), split="validation", output_dir=str(val), model_path=model, thresholds=EVERY_COMPONENT, **CPU_PRESET["network"], **CPU_PRESET["inference"])
    result = score_picks(read_picks(val / "picks.csv", ndim=3), load_manifest(full), "validation")
    metrics.update(val_score=result["score"], val_mean_f1=result["mean_f1"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


def tuned_score(full: Path, out: Path, split: str) -> None:
    """Per-class thresholds tuned on a SaSi run's `validation` picks (what the bundle's evaluate.yaml does), applied
    to its picks on ``split``; the scores with every component kept move to ``untuned``."""
    metrics = json.loads((out / "metrics.json").read_text())
    if "untuned" in metrics:
        return
    manifest = load_manifest(full)
    thresholds, validation = tune_thresholds(read_picks(out / "validation" / "picks.csv", ndim=3), manifest, "validation")
    save_thresholds(thresholds, out / "thresholds.json")
    result = score_picks(apply_thresholds(read_picks(out / "picks.csv", ndim=3), thresholds), manifest, split)
    untuned = {key: metrics[key] for key in ("score", "mean_f1", "val_score", "val_mean_f1")}
    metrics.update(result, thresholds=thresholds, val_score=validation["score"], val_mean_f1=validation["mean_f1"], untuned=untuned)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


def train_and_score(budget: Path, full: Path, encoder: Path | None, row: str, out: Path, split: str, seed: int, generalist: Path) -> dict:
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    use_pretrained, infill, consistency, from_generalist = ROWS[row]
    settings = {**CPU_PRESET["train"], "infill#enabled": infill, "pretrained": str(generalist) if from_generalist else None}
    settings["initialize#0"] = f"$monai.utils.set_determinism(seed={seed})"
    if not consistency:
        settings["consistency#weight"] = 0.0
    encoder_path = {"pretrained_encoder": str(encoder)} if use_pretrained else {}
    trained = timed_training(out, lambda: _run(
        "train", manifest=str(budget), output_dir=str(out), use_pretrained=use_pretrained, **encoder_path, **CPU_PRESET["network"], **settings
    ))
    _run("inference", manifest=str(full), split=split, output_dir=str(out), model_path=str(out / "models" / "model.pt"), thresholds=EVERY_COMPONENT, **CPU_PRESET["network"], **CPU_PRESET["inference"])
    result = score_picks(read_picks(out / "picks.csv", ndim=3), load_manifest(full), split)
    result.update(method=row, shots=shots_of(budget), seed=seed, train_seconds=trained)
    metrics.write_text(json.dumps(result, indent=2))
    return result


def semietpicker_and_score(budget: Path, full: Path, out: Path, split: str, seed: int) -> dict:
    """SemiETPicker's supervised ``train.yaml`` on the budget, thresholds tuned on `validation`, scored on ``split``."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    model, thresholds = out / "models" / "model.pt", out / "thresholds.json"
    roi = {"roi_size": CPU_PRESET["network"]["roi_size"]}
    overrides = {"manifest": str(budget), "output_dir": str(out), "seed": seed, "pretrained": None, **roi, **CPU_PRESET["semietpicker"]}
    trained = timed_training(out, lambda: run_bundle("semietpicker", "train", overrides))
    common = {"manifest": str(full), "model_path": str(model), "thresholds_path": str(thresholds), **roi, **CPU_PRESET["inference"]}
    run_bundle("semietpicker", "evaluate", {**common, "split": "validation", "output_dir": str(out / "validation")})
    run_bundle("semietpicker", "inference", {**common, "split": split, "output_dir": str(out)})
    result = score_picks(read_picks(out / "picks.csv", ndim=3), load_manifest(full), split)
    result.update(method=SEMIETPICKER, shots=shots_of(budget), seed=seed, train_seconds=trained)
    metrics.write_text(json.dumps(result, indent=2))
    return result


def blob_floor(full: Path, out: Path, split: str) -> dict:
    from cryoet_monai.inference.blobs import pick_with_blobs

    metrics = out / "metrics.json"
    if not metrics.is_file():
        write_picks(pick_with_blobs(full, split), out / "picks.csv")
        result = score_picks(read_picks(out / "picks.csv", ndim=3), load_manifest(full), split)
        metrics.write_text(json.dumps({**result, "method": "blob floor (0 labels)", "shots": 0, "seed": 0}, indent=2))
    return json.loads(metrics.read_text())


def shots_of(budget: Path) -> int:
    return int(budget.parent.name.split("_")[0].removeprefix("shots"))


def collect(out: Path) -> list[dict]:
    """One record per finished run under ``out`` (blob floor first, then by shots, seed and row order)."""
    records = []
    for path in [out / "blob" / "metrics.json", *sorted(out.glob("runs/shots*/seed*/*/metrics.json"))]:
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        record = {k: result.get(k) for k in ("shots", "seed", "method", "score", "mean_f1", "val_score", "val_mean_f1")}
        record["untuned_score"] = result.get("untuned", {}).get("score")
        record.update({f"F1 {name}": c["f1"] for name, c in result["classes"].items()})
        record["train_s"] = result.get("train_seconds")
        records.append(record)
    order = {name: i for i, name in enumerate(["blob floor (0 labels)", *ROWS, SEMIETPICKER])}
    return sorted(records, key=lambda r: (r["shots"], order[r["method"]], r["seed"]))


def _cell(mean: float, std: float, n: int, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def table(frame: pd.DataFrame) -> str:
    """Markdown table of one dataset: mean ± std over seeds of the CZII score, mean F1 and per-class F1."""
    frame = frame.dropna(axis=1, how="all")
    keys = ["shots", "method"]
    value_columns = [c for c in frame.columns if c not in (*keys, "seed")]
    grouped = frame.groupby(keys, sort=False)
    mean, std = grouped[value_columns].mean(), grouped[value_columns].std(ddof=0)
    lines = ["| " + " | ".join([*keys, "seeds", *value_columns]) + " |", "|" + "---|" * (len(value_columns) + 3)]
    for key, n in grouped.size().items():
        cells = [_cell(mean.loc[key, c], std.loc[key, c], n, 0 if c == "train_s" else 3) for c in value_columns]
        lines.append("| " + " | ".join([*map(str, key), str(n), *cells]) + " |")
    return "\n".join(lines)


def write_results(records: list[dict], dataset: str, results: Path) -> None:
    """Rewrite this dataset's CSV (one line per run) and ``results.md`` (one table per dataset)."""
    pd.DataFrame(records).to_csv(results / RESULT_FILES[dataset], index=False)
    parts = [f"## {name}\n\n{table(pd.read_csv(results / file))}\n" for name, file in RESULT_FILES.items() if (results / file).is_file()]
    (results / "results.md").write_text("\n".join(parts))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=list(RESULT_FILES), default="czii-bin2", help="synthetic preset of the data")
    parser.add_argument("--data", type=Path, required=True, help="folder of the dataset's manifest.json (synthesized when missing)")
    parser.add_argument("--templates", type=Path, help="density templates for synthesizing (required for shrec)")
    parser.add_argument("--out", type=Path, required=True, help="folder for budgets, runs and results")
    parser.add_argument("--shots", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=[*ROWS, SEMIETPICKER], choices=[*ROWS, SEMIETPICKER])
    parser.add_argument("--split", default="test", help="split to score (`validation` for experiments on the defaults)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override SaSi fine-tuning settings, e.g. consistency#weight=0.1 (schedule keys also for SemiETPicker)")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--generalist", type=Path, default=GENERALIST, help="pre-trained U-Net weights of the 'from the generalist' rows")
    parser.add_argument("--collect-only", action="store_true", help="only tabulate the finished runs under --out")
    parser.add_argument("--validation-only", action="store_true", help="only add `validation` scores and tuned thresholds to the finished SaSi runs")
    args = parser.parse_args(argv)
    if not args.collect_only and not args.generalist.is_file() and any(row in ROWS and ROWS[row][3] for row in args.rows):
        parser.error(f"no generalist weights at {args.generalist}: give --generalist, or leave out the 'from the generalist' rows")

    args.results.mkdir(parents=True, exist_ok=True)
    for key, value in parse_overrides([f"--{setting}" for setting in args.set]).items():
        CPU_PRESET["train"][key] = value
        if key in CPU_PRESET["semietpicker"]:  # the SemiETPicker row keeps the SaSi rows' schedule
            CPU_PRESET["semietpicker"][key] = value
    if args.collect_only:
        write_results(collect(args.out), args.dataset, args.results)
        return
    full = args.data / "manifest.json"
    if args.validation_only:
        for metrics in sorted(args.out.glob("runs/shots*/seed*/*/metrics.json")):
            if json.loads(metrics.read_text())["method"] in ROWS:
                validation_score(full, metrics.parent)
                tuned_score(full, metrics.parent, args.split)
        write_results(collect(args.out), args.dataset, args.results)
        return
    if not full.is_file():
        synthesize(args.data, preset=args.dataset, seed=0, templates=args.templates, n_tomograms=5)
    encoder = pretrain(full, args.out / "pretrain") if any(row in ROWS and ROWS[row][0] for row in args.rows) else None
    blob_floor(full, args.out / "blob", args.split)
    for shots in args.shots:
        for seed in args.seeds:
            budget = budget_manifest(full, args.out / "budgets" / f"shots{shots}_seed{seed}" / "manifest.json", shots=shots, seed=seed)
            for row in args.rows:
                run_dir = args.out / "runs" / f"shots{shots}" / f"seed{seed}" / row.strip("+ ").replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
                if row == SEMIETPICKER:
                    semietpicker_and_score(budget, full, run_dir, args.split, seed)
                else:
                    train_and_score(budget, full, encoder, row, run_dir, args.split, seed, args.generalist.resolve())
                    if args.split != "validation":
                        validation_score(full, run_dir)
                        tuned_score(full, run_dir, args.split)
                write_results(collect(args.out), args.dataset, args.results)
    print((args.results / "results.md").read_text())


if __name__ == "__main__":
    main()
