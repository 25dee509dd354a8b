"""Would classical image cues rank CryoMAE's candidates better than the exemplar similarity? (diagnostic, real table)

Takes one run of ``run_benchmark.py --tables real`` (its ``real/`` folder: manifest, exemplars, pre-trained model),
picks the training and test micrographs again with every candidate kept (``pick.yaml --threshold -1``, the run's
other settings), and scores each candidate by its similarity alone, by two picker-free image cues at the candidate
— darkness (minus a difference of Gaussians, σ r/4 − σ r) and local variance (σ r/2) — and by the sum of the
z-scored similarity and cues (no weights fitted). Each ranking is cut with Otsu's threshold, as the bundle does, and
scored at 0.5 r on the training micrograph (dev) and the test micrographs. Writes a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from monai.bundle import run as bundle_run
from scipy import ndimage

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.readers import read_image
from cryoet_monai.inference.exemplar import density_threshold
from cryoet_monai.metrics import score_picks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotation_completeness import difference_of_gaussians, normalised, values_at  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cryomae" / "configs"
RANKINGS = {
    "similarity (the bundle)": ["similarity"],
    "darkness": ["darkness"],
    "local variance": ["variance"],
    "similarity + darkness": ["similarity", "darkness"],
    "similarity + darkness + local variance": ["similarity", "darkness", "variance"],
}


def image_cues(picks: pd.DataFrame, manifest, split: str, radius: float) -> pd.DataFrame:
    """Darkness and local variance of the normalised micrograph at every pick."""
    tables = []
    for item in manifest.items(split):
        own = picks[picks["micrograph"].astype(str) == str(item.id)].copy()
        image = normalised(read_image(item.image)[0].astype(np.float32))
        variance = ndimage.gaussian_filter(image**2, radius / 2) - ndimage.gaussian_filter(image, radius / 2) ** 2
        xy = own[["x", "y"]].to_numpy()
        own["darkness"], own["variance"] = -values_at(difference_of_gaussians(image, radius), xy), values_at(variance, xy)
        tables.append(own)
    return pd.concat(tables, ignore_index=True).rename(columns={"score": "similarity"})


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the real/ folder of a run_benchmark.py output")
    parser.add_argument("--target-radius", type=float, default=16.0, help="as the run's --target-radius")
    parser.add_argument("--border", type=float, default=128.0, help="as the run's --border")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.run / "data" / "manifest.json")
    radius = manifest.classes[0].radius
    lines = [
        f"Command: `python benchmarks/cryomae/rescore_with_image_cues.py {shlex.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        "| ranking | dev picks | dev P / R / F1 | test picks | test P / R / F1 |",
        "|---|---|---|---|---|",
    ]
    candidates = {}
    for split in ("training", "test"):
        out = args.run / f"all_candidates_{split}"
        bundle_run(
            config_file=str(CONFIGS / "pick.yaml"), manifest=str(args.run / "data" / "manifest.json"), exemplars_file=str(args.run / "exemplars.csv"),
            model_path=str(args.run / "cryomae" / "models" / "model.pt"), output_dir=str(out), split=split, threshold=-1.0,
            target_radius_px=args.target_radius, border=args.border,
        )
        candidates[split] = image_cues(read_picks(out / "picks.csv"), manifest, split, radius)
    for name, cues in RANKINGS.items():
        cells = []
        for split, table in candidates.items():
            ranking = sum((table[c] - table[c].mean()) / table[c].std() for c in cues).to_numpy()
            kept = table[ranking >= density_threshold(ranking, "otsu")].rename(columns={"similarity": "score"})
            c = score_picks(kept[["micrograph", "particle_type", "x", "y", "score"]], manifest, split, hit_fraction=0.5)["classes"][manifest.classes[0].name]
            cells.append(f"{len(kept)} | {c['precision']:.3f} / {c['recall']:.3f} / {c['f1']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    return table


if __name__ == "__main__":
    main()
