"""Few-shot benchmark of the SaSi bundle: N particles per class, ablation rows, CZII score and F1 on `test`.

Rows: plain U-Net; + contrastive pre-training; + volume infill; + consistency guidance; full SaSi (all
three); and the zero-label blob floor (`cryoet-monai baseline`). Budgets come from
``budget_manifest(shots=N, seed=s)``; hyper-parameters are fixed in advance (no tuning on any split).
The encoder is pre-trained once (label-free) and shared by the rows that use it. Runs resume: a
finished run (its metrics.json exists) is not repeated.

    python benchmarks/few_shot/run_few_shot.py --data /tmp/sasi_bench/czii-bin2 --out /tmp/sasi_bench/runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from monai.bundle import run

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.budgets import budget_manifest
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks, write_picks
from cryoet_monai.metrics import score_picks

CONFIGS = bundle_dir("sasi") / "configs"
ROWS = {  # row name: (use_pretrained, infill, consistency weight)
    "plain U-Net": (False, False, 0.0),
    "+ pre-training": (True, False, 0.0),
    "+ infill": (False, True, 0.0),
    "+ consistency": (False, False, 1.0),
    "SaSi (all)": (True, True, 1.0),
}
CPU_PRESET = {  # small enough for 2 CPU cores; the bundle's defaults are for a GPU
    "network": {"roi_size": [32, 48, 48], "features": [8, 8, 16, 32, 64, 8]},
    "pretrain": {"max_epochs": 1, "epoch_length": 40, "batch_size": 8, "learning_rate": 0.003},
    "train": {"max_epochs": 4, "epoch_length": 20, "batch_size": 2, "num_samples": 1, "learning_rate": 0.003, "consistency#rampup_iterations": 20},
    "inference": {"sw_batch_size": 8, "overlap": 0.25},
}


def _run(config: str, **overrides) -> None:
    run(config_file=str(CONFIGS / f"{config}.yaml"), **overrides)


def pretrain(manifest: Path, out: Path) -> Path:
    encoder = out / "models" / "encoder.pt"
    if not encoder.is_file():
        _run("pretrain", manifest=str(manifest), output_dir=str(out), **CPU_PRESET["network"], **CPU_PRESET["pretrain"])
    return encoder


def train_and_score(budget: Path, full: Path, encoder: Path, row: str, out: Path, split: str, seed: int) -> dict:
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())
    use_pretrained, infill, weight = ROWS[row]
    start = time.time()
    _run(
        "train", manifest=str(budget), output_dir=str(out), use_pretrained=use_pretrained, pretrained_encoder=str(encoder),
        **{"infill#enabled": infill, "consistency#weight": weight, "initialize": [f"$monai.utils.set_determinism(seed={seed})"]},
        **CPU_PRESET["network"], **CPU_PRESET["train"],
    )
    trained = time.time() - start
    _run("inference", manifest=str(full), split=split, output_dir=str(out), model_path=str(out / "models" / "model.pt"), **CPU_PRESET["network"], **CPU_PRESET["inference"])
    result = score_picks(read_picks(out / "picks.csv", ndim=3), load_manifest(full), split)
    result.update(method=row, shots=shots_of(budget), seed=seed, train_seconds=round(trained, 1))
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
        record = {k: result[k] for k in ("shots", "seed", "method", "score", "mean_f1")}
        record.update({f"F1 {name}": c["f1"] for name, c in result["classes"].items()})
        records.append(record)
    order = {name: i for i, name in enumerate(["blob floor (0 labels)", *ROWS])}
    return sorted(records, key=lambda r: (r["shots"], order[r["method"]], r["seed"]))


def table(records: list[dict]) -> str:
    """Markdown table: mean over seeds of the CZII score, mean F1 and per-class F1."""
    frame = pd.DataFrame(records)
    keys = ["shots", "method"]
    value_columns = [c for c in frame.columns if c not in (*keys, "seed")]
    grouped = frame.groupby(keys, sort=False)
    mean = grouped[value_columns].mean().round(3)
    mean.insert(0, "seeds", grouped.size())
    mean = mean.reset_index()
    lines = ["| " + " | ".join(mean.columns) + " |", "|" + "---|" * len(mean.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in mean.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of a full synthetic manifest (manifest.json)")
    parser.add_argument("--out", type=Path, required=True, help="folder for budgets, runs and results")
    parser.add_argument("--shots", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--split", default="test")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)

    full = args.data / "manifest.json"
    encoder = pretrain(full, args.out / "pretrain")
    blob_floor(full, args.out / "blob", args.split)
    args.results.mkdir(parents=True, exist_ok=True)
    for shots in args.shots:
        for seed in args.seeds:
            budget = budget_manifest(full, args.out / "budgets" / f"shots{shots}_seed{seed}" / "manifest.json", shots=shots, seed=seed)
            for row in args.rows:
                run_dir = args.out / "runs" / f"shots{shots}" / f"seed{seed}" / row.strip("+ ").replace(" ", "_").replace("(", "").replace(")", "")
                train_and_score(budget, full, encoder, row, run_dir, args.split, seed)
                records = collect(args.out)
                pd.DataFrame(records).to_csv(args.results / "results.csv", index=False)
                (args.results / "results.md").write_text(table(records) + "\n")
    print(table(collect(args.out)))


if __name__ == "__main__":
    main()
