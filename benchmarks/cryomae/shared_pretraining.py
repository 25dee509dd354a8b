"""Does a longer masked reconstruction, shared by every exemplar draw, make CryoMAE pick better? (real table)

Takes runs of ``run_benchmark.py --tables real`` (their ``real/`` folders: manifest, exemplars; one per exemplar
draw). For each ``--reconstruction-iterations`` N it pre-trains the masked autoencoder alone (``pretrain.yaml`` with
``self_cross_weight 0``) for N iterations on the training micrograph — once, whatever the exemplars — then, for every
exemplar draw and every ``--seeds`` seed, runs the self-cross phase from those weights (``--pretrained``, the bundle's
``self_cross_iterations``), picks the training micrograph (dev) and the test micrographs, and scores them at 0.5 r.
Finished steps (``models/model.pt``, ``picks.csv``) are kept and skipped when the command is run again.
Writes ``<out>/shared_pretraining.json`` and ``<out>/shared_pretraining.md`` (also printed).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from monai.bundle import run as bundle_run

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.metrics import score_picks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import CONFIGS, scores  # noqa: E402


def masked_autoencoder(run: Path, iterations: int, out: Path, target_radius: float, network: dict) -> Path:
    """Weights of ``iterations`` of masked reconstruction alone on the run's training micrograph."""
    weights = out / "models" / "model.pt"
    if not weights.is_file():
        bundle_run(config_file=str(CONFIGS / "pretrain.yaml"), manifest=str(run / "data" / "manifest.json"),
                   exemplars_file=str(run / "exemplars.csv"), output_dir=str(out), target_radius_px=target_radius,
                   self_cross_weight=0.0, reconstruction_warmup=iterations, self_cross_iterations=0, **network)
    return weights


def self_cross_and_pick(run: Path, weights: Path, seed: int, out: Path, target_radius: float, border: float, network: dict) -> dict:
    """Self-cross phase from ``weights``, then picks of the training (dev) and test micrographs with their scores."""
    manifest_path = run / "data" / "manifest.json"
    common = {"manifest": str(manifest_path), "exemplars_file": str(run / "exemplars.csv"), "target_radius_px": target_radius, **network}
    if not (out / "models" / "model.pt").is_file():
        bundle_run(config_file=str(CONFIGS / "pretrain.yaml"), output_dir=str(out), pretrained=str(weights), seed=seed, **common)
    manifest = load_manifest(manifest_path)
    name = manifest.classes[0].name
    row = {}
    for split in ("training", "test"):
        if not (out / split / "picks.csv").is_file():
            bundle_run(config_file=str(CONFIGS / "pick.yaml"), output_dir=str(out / split), split=split, border=border,
                       model_path=str(out / "models" / "model.pt"), **common)
        picks = read_picks(out / split / "picks.csv")
        if split == "training":
            dev = score_picks(picks, manifest, split, hit_fraction=0.5)["classes"][name]
            row["dev"] = {k: round(float(dev[k]), 3) for k in ("precision", "recall", "f1")}
        else:
            row["test"] = scores(picks, manifest)
    return row


def markdown(rows: list[dict]) -> str:
    micrographs = list(rows[0]["test"]["per_micrograph_hit0.5"])
    lines = [
        "| reconstruction iterations | exemplar draw | seed | dev P / R / F1 | test P / R / F1 | test F1 @1r | "
        + " | ".join(f"F1 {m.rsplit('-', 1)[-1]}" for m in micrographs) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(micrographs),
    ]

    def triple(c):
        return f"{c['precision']:.3f} / {c['recall']:.3f} / {c['f1']:.3f}"

    for r in rows:
        per = (r["test"]["per_micrograph_hit0.5"][m]["f1"] for m in micrographs)
        lines.append(f"| {r['iterations']} | {r['draw']} | {r['seed']} | {triple(r['dev'])} | {triple(r['test']['hit0.5'])} | "
                     f"{r['test']['hit1.0']['f1']:.3f} | " + " | ".join(f"{f:.3f}" for f in per) + " |")
    lines += ["", "| reconstruction iterations | exemplar draw | runs | dev F1 mean ± sd | test F1 mean ± sd | test F1 @1r mean |", "|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["iterations"], r["draw"]) for r in rows):
        group = [r for r in rows if (r["iterations"], r["draw"]) == key]
        dev = np.array([r["dev"]["f1"] for r in group])
        test = np.array([r["test"]["hit0.5"]["f1"] for r in group])
        far = np.mean([r["test"]["hit1.0"]["f1"] for r in group])
        lines.append(f"| {key[0]} | {key[1]} | {len(group)} | {dev.mean():.3f} ± {dev.std(ddof=1) if len(group) > 1 else 0:.3f} | "
                     f"{test.mean():.3f} ± {test.std(ddof=1) if len(group) > 1 else 0:.3f} | {far:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="real/ folders of run_benchmark.py runs, one per exemplar draw")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reconstruction-iterations", type=int, nargs="+", default=[3300, 12000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the self-cross phase (the bundle's seed)")
    parser.add_argument("--target-radius", type=float, default=16.0)
    parser.add_argument("--border", type=float, default=128.0)
    parser.add_argument("--network-def", nargs="*", default=[], metavar="KEY=VALUE",
                        help="encoder settings for every run, e.g. hidden_size=192 num_layers=6 (the bundle's network_def#KEY)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    network = {f"network_def#{key}": json.loads(value) for key, value in (item.split("=", 1) for item in args.network_def)}
    rows = []
    for iterations in args.reconstruction_iterations:
        weights = masked_autoencoder(args.runs[0], iterations, args.out / f"mae_{iterations}", args.target_radius, network)
        for run in args.runs:
            draw = run.resolve().parent.name
            for seed in args.seeds:
                out = args.out / f"mae_{iterations}" / f"{draw}_seed{seed}"
                row = self_cross_and_pick(run, weights, seed, out, args.target_radius, args.border, network)
                rows.append({"iterations": iterations, "draw": draw, "seed": seed, **row})
                print(json.dumps(rows[-1]), flush=True)
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    (args.out / "shared_pretraining.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    table = (
        "# CryoMAE: one masked reconstruction shared by every exemplar draw\n\n"
        f"Command: `python benchmarks/cryomae/shared_pretraining.py {command}`\n\n"
        f"Masked reconstruction alone for N iterations once, then per exemplar draw and seed the bundle's self-cross phase "
        f"from those weights (`--pretrained`); encoder {' '.join(args.network_def) or 'as the bundle defines it'}; "
        f"picks at target radius {args.target_radius:g} px, edge border {args.border:g} px; "
        "F1 at 0.5 r unless marked (dev: the training micrograph against its whole annotation). CPU only.\n\n"
        + markdown(rows)
    )
    (args.out / "shared_pretraining.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
