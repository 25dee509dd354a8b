"""CryoMAE 3D variant on synthetic tomograms: per class, N exemplars of the first training tomogram.

For each class and each shot count, pre-trains ``pretrain_3d.yaml`` with ``class_name`` and picks the test
tomograms with ``pick_3d.yaml``; scores that class with ``score_picks`` (hit within 0.5 × radius, as in the CZII
challenge). With ``--reconstruction-warmup N`` the masked autoencoder is first trained alone for N iterations, once per
class (``self_cross_weight 0``; it does not depend on the exemplars), and that class's runs start from it
(``--pretrained``). Writes ``<out>/results_3d.json`` and ``<out>/results_3d.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from monai.bundle import run as bundle_run

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.metrics import score_picks

CONFIGS = bundle_dir("cryomae") / "configs"


def masked_autoencoder(args, class_name: str) -> Path:
    """Weights of ``--reconstruction-warmup`` iterations of masked reconstruction alone, trained at the first call.

    One per class: the scale setting the weights record is the particle radius after down-sampling, which differs
    between classes even where the tomogram is not down-sampled.
    """
    weights = args.out / f"masked_autoencoder_{class_name}" / "models" / "model.pt"
    if not weights.is_file():
        bundle_run(config_file=str(CONFIGS / "pretrain_3d.yaml"), manifest=str(args.manifest), output_dir=str(weights.parents[1]),
                   class_name=class_name, self_cross_weight=0.0, reconstruction_warmup=args.reconstruction_warmup, self_cross_iterations=0)
    return weights


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="a 3D manifest, e.g. `cryoet-monai synth --preset czii-bin2`")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", nargs="+", help="classes to run (default: all scored classes)")
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 15])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reconstruction-warmup", type=int, default=0, help="iterations of masked reconstruction alone, shared by the runs of a class")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    classes = args.classes or [c.name for c in manifest.classes if c.weight > 0]
    rows = []
    for shots in args.shots:
        for name in classes:
            out = args.out / f"{name}_{shots}"
            common = {"manifest": str(args.manifest), "output_dir": str(out), "class_name": name, "num_exemplars": shots, "exemplar_seed": args.seed}
            pretrained = {"pretrained": str(masked_autoencoder(args, name))} if args.reconstruction_warmup > 0 else {}
            start = time.time()  # the shared masked autoencoder is not counted
            bundle_run(config_file=str(CONFIGS / "pretrain_3d.yaml"), self_cross_iterations=args.iterations, **pretrained, **common)
            bundle_run(config_file=str(CONFIGS / "pick_3d.yaml"), **common)
            result = score_picks(read_picks(out / "picks.csv"), manifest, "test")["classes"][name]
            row = {"class": name, "shots": shots, "seconds": round(time.time() - start, 1), **{k: round(float(result[k]), 3) for k in ("tp", "fp", "fn", "precision", "recall", "f1", "fbeta")}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results_3d.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# CryoMAE 3D variant",
        "",
        f"Command: `python benchmarks/cryomae/run_3d.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"Manifest `{manifest.name}`; exemplars: seeded random choice (seed {args.seed}) among the first training tomogram's "
        f"picks of the class; {args.iterations} pre-training iterations per run"
        f"{f' from {args.reconstruction_warmup} iterations of masked reconstruction alone' if args.reconstruction_warmup else ''}; "
        "scored on the test split, hit within 0.5 × radius.",
        "",
        "| class | exemplars | TP | FP | FN | precision | recall | F1 | F-beta(4) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['class']} | {r['shots']} | {r['tp']} | {r['fp']} | {r['fn']} | {r['precision']} | {r['recall']} | {r['f1']} | {r['fbeta']} | {r['seconds']} |" for r in rows]
    (args.out / "results_3d.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
