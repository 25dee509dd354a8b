"""How right are the teacher's pseudo-particles? Scores them on the unlabeled tomogram against its synthetic truth.

For a teacher–student run of ``run.py``: the run's pseudo-label thresholds (set from its supervised start's
validation picks, as ``run.py`` does), the teacher's prediction fused over the pseudo-labeler's views on the whole
unlabeled tomogram, its peaks above those thresholds (``inference.yaml`` with ``tta_views`` = the teacher's views,
the same mean of inverse-mapped logits; picked once at the lowest threshold, then filtered), scored against the
synthetic truth of that tomogram (hit within half a radius) — for the teacher at the start (the supervised model)
and at the end of teacher–student training.
Training sees the tomogram as crops, so this is the pseudo-labels' quality up to crop edges.

    python benchmarks/label_efficiency/pseudo_label_quality.py --data DATA --run RUNS/runs/1pct/teacher-student/seed0 --out Q
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.engines.mean_teacher import latest_checkpoint
from cryoet_monai.inference.thresholds import DEFAULT_CANDIDATES, apply_thresholds
from cryoet_monai.metrics import score_picks
from cryoet_monai.runner import run_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import burn_in  # noqa: E402

TEACHER_VIEWS = ConfigParser.load_config_file(bundle_dir("semietpicker") / "configs" / "train_semi.yaml")["teacher_views"]


def unlabeled_truth_manifest(data: Path, out: Path) -> Path:
    """A copy of ``data``'s manifest whose ``test`` split is its ``unlabeled`` items with their truth picks."""
    manifest = json.loads((data / "manifest.json").read_text())
    unlabeled = manifest["unlabeled"]
    if not unlabeled:
        raise SystemExit(f"{data / 'manifest.json'}: no unlabeled items to score pseudo-labels on")
    test = []
    for item in unlabeled:
        truth = data / "picks" / f"{item['id']}.csv"
        if not truth.is_file():
            raise SystemExit(f"{truth}: no truth for unlabeled item {item['id']} (pseudo-label quality needs synthetic data)")
        test.append({**item, "image": str((data / item["image"]).resolve()), "picks": str(truth.resolve())})
    manifest = {**manifest, "training": [], "unlabeled": [], "validation": [], "test": test}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def teacher_weights(run: Path, out: Path) -> Path:
    """The final teacher's state dict, taken from the run's last checkpoint."""
    checkpoint = latest_checkpoint(run / "models", "checkpoint_*.pt")
    if checkpoint is None:
        raise SystemExit(f"{run / 'models'}: no checkpoint holding the teacher")
    path = out / "teacher.pt"
    torch.save(torch.load(checkpoint, map_location="cpu", weights_only=False)["teacher"], path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic data folder (manifest.json, picks/ with the unlabeled truth)")
    parser.add_argument("--run", type=Path, required=True, help="a teacher-student run folder of run.py (…/runs/<budget>/teacher-student/seed<N>)")
    parser.add_argument("--supervised", type=Path, help="its supervised start (default: …/supervised/seed<N> beside it)")
    parser.add_argument("--pseudo-precision", type=float, default=0.8, help="as given to run.py")
    parser.add_argument("--views", type=int, nargs="+", default=TEACHER_VIEWS, help="the run's teacher views (default: train_semi.yaml's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    supervised = args.supervised or args.run.parent.parent / "supervised" / args.run.name
    args.out.mkdir(parents=True, exist_ok=True)
    truth = unlabeled_truth_manifest(args.data, args.out)
    thresholds = burn_in(args.data / "manifest.json", supervised, args.pseudo_precision, "model.pt")["pseudo_threshold"]
    truth_manifest = load_manifest(truth)
    names = truth_manifest.class_names
    active = [c for c, t in enumerate(thresholds) if t < 1.0]
    print(f"pseudo-label thresholds: {dict(zip(names, thresholds))}")
    if not active:
        raise SystemExit(f"{args.run}: no class gets pseudo-particles (every threshold is 1); nothing to score")
    rows = []
    teachers = {"start (supervised)": lambda: supervised / "models" / "model.pt", "end": lambda: teacher_weights(args.run, args.out)}
    for teacher, weights in teachers.items():
        picks_dir = args.out / f"{teacher.split()[0]}_views_{'_'.join(map(str, args.views))}"  # cached picks only for the same views
        if not (picks_dir / "picks.csv").is_file():
            lowest = [float(min(DEFAULT_CANDIDATES))] * len(names)
            run_bundle("semietpicker", "inference", {"manifest": str(truth), "split": "test", "model_path": str(weights()), "thresholds": lowest, "tta_views": args.views, "output_dir": str(picks_dir)})
        picks = apply_thresholds(read_picks(picks_dir / "picks.csv", ndim=3), dict(zip(names, thresholds)))
        result = score_picks(picks, truth_manifest, "test")
        for c in active:
            r = result["classes"][names[c]]
            rows.append(f"| {teacher} | {names[c]} | {thresholds[c]:.2f} | {r['tp'] + r['fp']} | {r['tp'] + r['fn']} | {r['precision']:.3f} | {r['recall']:.3f} |")
    lines = [
        f"Pseudo-particles of `{args.run}` on the unlabeled tomogram(s), hit within half a radius; classes without pseudo-particles: "
        + (", ".join(n for c, n in enumerate(names) if c not in active) or "none"),
        "",
        "| teacher | class | threshold | pseudo-particles | true particles | precision | recall |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    (args.out / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
