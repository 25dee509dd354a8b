"""Picking at the model's voxel size with no flag: the test tomograms of a data set as they are, and up-sampled 2×
(half the voxel size), picked by each shipped 3D model, which resamples every tomogram to the voxel size its
`model_info.json` records.

    cryoet-monai synth --out DATA --preset czii-bin2 --seed 0 --layout ../shared/data/czii_picks
    python benchmarks/voxel_size/run.py --data DATA --out OUT

Writes `results.md` here (or `--results`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.readers import read_image, write_mrc
from cryoet_monai.metrics import score_picks
from cryoet_monai.runner import run_bundle
from cryoet_monai.transforms import ResampleToVoxelSize

HERE = Path(__file__).resolve().parent


def upsampled_test_manifest(data: Path, out: Path) -> tuple[Path, float]:
    """A manifest of the test tomograms of ``data`` at half their voxel size (same picks, in Å)."""
    raw = json.loads((data / "manifest.json").read_text())
    original = float(raw["voxel_size"])
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for item in raw["test"]:
        volume, voxel_size = read_image(data / item["image"])
        fine = ResampleToVoxelSize(voxel_size / 2)(torch.as_tensor(volume)[None], voxel_size)[0].numpy()
        write_mrc(out / f"{item['id']}.mrc", fine, voxel_size / 2)
        entries.append({"id": item["id"], "image": f"{item['id']}.mrc", "picks": str((data / item["picks"]).resolve())})
    raw.update(voxel_size=original / 2, training=[], validation=[], unlabeled=[], test=entries)
    (out / "manifest.json").write_text(json.dumps(raw))
    return out / "manifest.json", original


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of a synthetic data set's manifest.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    fine, voxel_size = upsampled_test_manifest(args.data, args.out / "upsampled")
    rows = []
    for bundle in ("semietpicker", "sasi"):
        for name, manifest, folder in (("as they are", args.data / "manifest.json", "native"), (f"up-sampled 2× ({voxel_size / 2:g} Å)", fine, "upsampled")):
            out = args.out / bundle / folder
            run_bundle(bundle, "inference", {"manifest": str(manifest), "split": "test", "output_dir": str(out)})
            result = score_picks(read_picks(out / "picks.csv"), load_manifest(manifest), "test")
            rows.append(f"| {bundle} | {name} | {result['score']:.3f} | {result['mean_f1']:.3f} |")
            print(rows[-1], flush=True)
    text = ["# Picking at the model's voxel size, no flag", "", f"Test tomograms of `{args.data}` ({voxel_size:g} Å), shipped models, CPU.", "",
            "| bundle | test tomograms | CZII score | mean F1 |", "|---|---|---|---|", *rows, "",
            "Reproduce: `python benchmarks/voxel_size/run.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`"]
    args.results.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
