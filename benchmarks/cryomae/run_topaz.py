"""Topaz beside CryoMAE on EMPIAR-10017: Topaz's shipped pretrained detector fine-tuned on the same 15 exemplars.

The peer row of the CryoMAE benchmark. Exemplars, micrographs, edge margin and scoring are those of
``run_benchmark.py`` (same ``--seed``, same ``select_exemplars`` draw from the training micrograph). Topaz runs as a
user runs it, through its command line: ``topaz preprocess`` (down-sampling by ``--scale``, its own normalisation),
``topaz train`` on the 15 exemplars of the training micrograph (positive-unlabelled learning, GE-binomial) from its
shipped pretrained weights (Topaz's default) and, for reference, from scratch (``--no-pretrained``), then
``topaz extract`` on the three test micrographs. Topaz needs the expected share of positive pixels: ``--pi`` is given
as ``--expected-particles`` per micrograph times the pixels within its labelling radius (its ``-n`` option mis-sets
the share in 0.3.20). Picks are kept at score ≥ 0 (the classifier's even odds); the best threshold on the test
micrographs is reported beside it as an upper bound that no user could choose, and so are the top
``--expected-particles`` picks of each micrograph (the count Topaz was told).

Topaz installs its own torch; it lives in a virtual environment of its own (``--venv``, created on first use: pip
``topaz-em==0.3.20`` with ``torch==2.13.0`` and ``torchvision==0.28.0`` from the package registry, about 5 GB with CUDA
libraries that run on the CPU; PyPI's torchvision does not load beside a CPU-only torch such as the project's).

    python benchmarks/cryomae/run_topaz.py --empiar ../shared/data/empiar10017_micrographs --venv TOPAZ_VENV --out OUT --seed 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.masks import manifest_from_masks
from cryoet_monai.data.picks import within_border
from cryoet_monai.data.readers import read_image, write_mrc
from cryoet_monai.inference.exemplar import select_exemplars

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_benchmark import scores  # noqa: E402  (the CryoMAE benchmark's scoring, unchanged)

STARTS = {"pretrained": "Topaz, shipped pretrained model fine-tuned", "scratch": "Topaz from scratch"}
TOPAZ_REQUIREMENTS = ["topaz-em==0.3.20", "torch==2.13.0", "torchvision==0.28.0"]


def topaz_command(venv: Path) -> Path:
    """The ``topaz`` executable of ``venv``, creating the environment on first use."""
    topaz = venv / "bin" / "topaz"
    if not topaz.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # --isolated: pip's local configuration may offer a CPU-only torch wheel, beside which PyPI's torchvision fails
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--isolated", "--quiet", *TOPAZ_REQUIREMENTS], check=True)
    return topaz


def positive_share(expected_particles: float, radius: int, shape: tuple[int, int]) -> float:
    """Topaz's ``pi``: the share of a micrograph's pixels that lie within ``radius`` px of a particle centre."""
    offsets = np.arange(-radius, radius + 1)
    disc = int(((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).sum())
    return expected_particles * disc / float(shape[0] * shape[1])


def run(cmd: list, log: Path) -> None:
    with log.open("a") as stream:
        stream.write("$ " + " ".join(map(str, cmd)) + "\n")
        stream.flush()
        subprocess.run([str(c) for c in cmd], check=True, stdout=stream, stderr=subprocess.STDOUT)


def as_mrc(item, folder: Path) -> Path:
    """The item's micrograph as ``folder/<id>.mrc`` (values and pixel size unchanged)."""
    path = folder / f"{item.id}.mrc"
    if not path.is_file():
        image, _ = read_image(item.image)
        write_mrc(path, image.astype(np.float32), item.voxel_size)
    return path


def topaz_picks(path: Path) -> pd.DataFrame:
    """``topaz extract``'s table (image_name, x_coord, y_coord, score; coordinates already up-scaled) as picks."""
    table = pd.read_csv(path, sep="\t")
    return pd.DataFrame({"micrograph": table["image_name"].astype(str), "x": table["x_coord"].astype(float), "y": table["y_coord"].astype(float), "score": table["score"].astype(float)})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--empiar", type=Path, required=True, help="EMPIAR-10017 folder (images/, masks/)")
    parser.add_argument("--venv", type=Path, required=True, help="Topaz's virtual environment (created when missing)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="exemplar draw (as run_benchmark.py)")
    parser.add_argument("--shots", type=int, default=15)
    parser.add_argument("--scale", type=int, default=4, help="topaz preprocess down-sampling (54 px radius -> 13.5 px, 7 Å/px)")
    parser.add_argument("--updates", type=int, default=300, help="fine-tuning parameter updates (3 epochs of a third each)")
    parser.add_argument("--expected-particles", type=float, default=700.0, help="particles per micrograph, for --pi")
    parser.add_argument("--label-radius", type=int, default=3, help="topaz train -r: px around an exemplar centre taken as positive")
    parser.add_argument("--border", type=float, default=128.0, help="drop picks closer than this (original px) to an edge, as run_benchmark.py")
    parser.add_argument("--starts", nargs="+", choices=list(STARTS), default=list(STARTS), help="fine-tune Topaz's pretrained model, train from scratch, or both")
    args = parser.parse_args(argv)

    topaz = topaz_command(args.venv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "topaz.log"
    template = HERE.parents[1] / "data_manifests" / "empiar10017.json"
    manifest = load_manifest(manifest_from_masks(args.empiar, template, args.out / "data" / "manifest.json"))
    particle = manifest.classes[0]
    train = manifest.items("training")[0]
    exemplars = select_exemplars(train.picks, train.id, args.shots, seed=args.seed)

    processed = {}
    for split in ("training", "test"):
        processed[split] = args.out / "processed" / split
        if not all((processed[split] / f"{item.id}.mrc").is_file() for item in manifest.items(split)):
            micrographs = [as_mrc(item, args.out / "mrc") for item in manifest.items(split)]  # topaz 0.3.20 fails on JPEG
            run([topaz, "preprocess", "-s", args.scale, "-o", processed[split], *micrographs], log)
    targets = args.out / f"targets_seed{args.seed}.txt"
    pd.DataFrame({"image_name": str(train.id), "x_coord": np.round(exemplars["x"] / args.scale).astype(int), "y_coord": np.round(exemplars["y"] / args.scale).astype(int)}).to_csv(targets, sep="\t", index=False)
    shape = read_image(next(processed["training"].iterdir()))[0].shape
    pi = positive_share(args.expected_particles, args.label_radius, shape)

    test_shapes = {str(item.id): read_image(item.image)[0].shape for item in manifest.items("test")}
    results = args.out / f"results_topaz_seed{args.seed}.json"
    rows = json.loads(results.read_text()) if results.is_file() else []
    epochs = 3
    for start in args.starts:
        label = STARTS[start]
        if any(row["method"].startswith(label) for row in rows):
            continue
        began = time.time()
        prefix = args.out / f"{start}_seed{args.seed}" / "model"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        model = prefix.parent / f"model_epoch{epochs}.sav"
        if not model.is_file():
            run([topaz, "train", "--pretrained" if start == "pretrained" else "--no-pretrained", "--train-images", processed["training"], "--train-targets", targets, "--pi", f"{pi:.6f}",
                 "--radius", args.label_radius, "--num-epochs", epochs, "--epoch-size", args.updates // epochs, "--device", -1,
                 "--save-prefix", prefix, "-o", prefix.parent / "training.txt"], log)
        extracted = prefix.parent / "picks.txt"
        if not extracted.is_file():  # written under another name first: an interrupted extraction is never taken as done
            partial = extracted.with_suffix(".partial")
            run([topaz, "extract", "-m", model, "-r", int(round(particle.radius / args.scale)), "-x", args.scale, "-t", -6, "--device", -1,
                 "-o", partial, *sorted(processed["test"].iterdir())], log)
            partial.rename(extracted)
        picks = topaz_picks(extracted).assign(particle_type=particle.name)
        kept = [own[within_border(own[["x", "y"]].to_numpy(), test_shapes[name], args.border)] for name, own in picks.groupby("micrograph")]
        picks = pd.concat(kept, ignore_index=True)
        timing = prefix.parent / "seconds.txt"  # training and extraction wall time, kept for reruns that reuse them
        if not timing.is_file():
            timing.write_text(f"{time.time() - began:.1f}\n")
        seconds = float(timing.read_text())
        at_even_odds = picks[picks["score"] >= 0.0]
        rows.append({"table": "real", "seed": args.seed, "method": f"{label} ({args.updates} updates), score ≥ 0", "picks": len(at_even_odds), "seconds": seconds, "pi": pi, **scores(at_even_odds, manifest)})
        expected = picks.sort_values("score", ascending=False).groupby("micrograph").head(int(args.expected_particles))
        rows.append({"table": "real", "seed": args.seed, "method": f"{label} ({args.updates} updates), top {args.expected_particles:g} per micrograph", "picks": len(expected), "seconds": seconds, "pi": pi, **scores(expected, manifest)})
        best = max((scores(picks[picks["score"] >= t], manifest) | {"threshold": float(t), "picks": int((picks["score"] >= t).sum())} for t in np.arange(-6.0, 6.01, 0.5)), key=lambda s: s["hit0.5"]["f1"])
        rows.append({"table": "real", "seed": args.seed, "method": f"{label} ({args.updates} updates), best test threshold (upper bound)", "seconds": seconds, "pi": pi, **best})
        for row in rows[-3:]:
            print(json.dumps(row), flush=True)
        results.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
