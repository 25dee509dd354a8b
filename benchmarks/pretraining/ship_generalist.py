"""Ship a generalist pre-training run's weights into a bundle: ``bundles/<bundle>/models/generalist/``.

Copies the network's state dict (the final ``model.pt``, or the network of an epoch checkpoint) and writes the
``model_info.json`` beside it: what the run's own record says (3D: the 24 pre-training species as its classes —
fine-tuning gives a fresh head for any other list — and 20.024 Å; CryoMAE: the particle scale), the contrast, and its
provenance — the pool, the schedule (epochs × iterations, crop, batch, learning rate) and the CPU hours the log shows.

    python benchmarks/pretraining/ship_generalist.py --bundle semietpicker --work WORK [--checkpoint PATH]
WORK is the folder of pretrain_generalist.sh (pool/ or cryomae_pool/, <bundle>/, <bundle>.log).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.species import GENERALIST_SPECIES
from cryoet_monai.engines import latest_checkpoint
from cryoet_monai.handlers.model_info import read_model_info, write_model_info

BASE_CONFIG = {"semietpicker": "train.yaml", "sasi": "train.yaml", "cryomae": "pretrain.yaml"}  # the overlay's base
POOL = {"semietpicker": "pool", "sasi": "pool", "cryomae": "cryomae_pool"}  # pools in WORK
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ - INFO - Epoch: (\d+)/\d+, Iter: \d+/\d+")


def training_hours(log: Path, pause_seconds: float = 300.0) -> float:
    """Hours between the log's iteration lines, leaving out pauses longer than ``pause_seconds`` (interruptions)."""
    times = [datetime.datetime.fromisoformat(m.group(1)) for m in map(TIMESTAMP.match, log.read_text().splitlines()) if m]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    return sum(g for g in gaps if 0 <= g <= pause_seconds) / 3600


def schedule(bundle: str, trainer: dict) -> dict:
    """The pre-training schedule: the run's epochs (its trainer state) and the settings of ``bundle``'s train.yaml +
    pretrain_generalist.yaml."""
    configs = bundle_dir(bundle) / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / BASE_CONFIG[bundle]), str(configs / "pretrain_generalist.yaml")])
    keys = ("batch_size", "num_samples", "learning_rate", "roi_size", "window", "cache_num", "cache_replace_rate")
    epochs = {"epochs_done": trainer["iteration"] // trainer["epoch_length"], "max_epochs": trainer["max_epochs"], "epoch_length": trainer["epoch_length"]}
    return {**epochs, **{k: parser.config[k] for k in keys if k in parser.config}}


def pool_summary(pool: Path) -> dict:
    """What the pre-training pool holds, from its manifest and ``spread.json`` (tomograms) or the manifest alone
    (micrographs of cryomae_pool.py)."""
    manifest = json.loads((pool / "manifest.json").read_text())
    if manifest["ndim"] == 2:
        real = [item for item in manifest["training"] if "/synthetic/" not in item["image"]]
        return {
            "generator": "benchmarks/pretraining/cryomae_pool.py",
            "micrographs": {"real (unlabeled EMPIAR-10017)": len(real), "synthetic (SHREC templates)": len(manifest["training"]) - len(real)},
            "pixel_size": manifest["voxel_size"],
            "particle_radius_px": manifest["classes"][0]["radius"],
        }
    record = json.loads((pool / "spread.json").read_text())
    voxel_sizes = [float(item["overrides"]["voxel_size"]) for item in record["items"]]
    return {
        "generator": "cryoet_monai.data.acquisition_spread.synthesize_spread(species='generalist')",
        "seed": record["seed"],
        "tomograms": {split: len(manifest.get(split, [])) for split in ("training", "validation")},
        "voxel_size_range": [min(voxel_sizes), max(voxel_sizes)],
        "species": [c["name"] for c in manifest["classes"]],
        "held_out": "the six CZII species (never in pre-training)",
    }


def class_radii(pool: Path, class_names: list[str] | None) -> list[float] | None:
    """The particle radius (Å) of each class the weights were trained for, from the pool's manifest (None for
    weights not tied to classes)."""
    if class_names is None:
        return None
    radius = {c["name"]: c["radius"] for c in json.loads((pool / "manifest.json").read_text())["classes"]}
    return [radius[name] for name in class_names]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", choices=list(BASE_CONFIG), required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder of pretrain_generalist.sh")
    parser.add_argument("--checkpoint", type=Path, help="an epoch checkpoint to ship instead of the final model.pt")
    parser.add_argument("--dest", type=Path, help="where to write (default: bundles/<bundle>/models/generalist)")
    parser.add_argument("--note", help="what else a reader should know about the run (e.g. a schedule changed on resuming)")
    args = parser.parse_args(argv)

    run = args.work / args.bundle / "models"
    source = args.checkpoint or run / "model.pt"
    if not source.is_file():
        parser.error(f"no weights at {source}: the run has not finished (give --checkpoint for an epoch checkpoint)")
    state = torch.load(source, map_location="cpu", weights_only=False)
    weights = state.get("model", state)
    trainer = (state if args.checkpoint else torch.load(latest_checkpoint(run, "checkpoint_*.pt"), map_location="cpu", weights_only=False))["trainer"]
    info = read_model_info(source)
    if info is None or info["class_names"] != ([s.name for s in GENERALIST_SPECIES] if args.bundle != "cryomae" else None):
        raise SystemExit(f"{source}: not a generalist run of {args.bundle} (its model_info.json does not name the generalist species, or names classes for CryoMAE)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    provenance = {
        "made_by": f"benchmarks/pretraining/pretrain_generalist.sh, shipped by ship_generalist.py at commit {commit}",
        "data": pool_summary(args.work / POOL[args.bundle]),
        "schedule": schedule(args.bundle, trainer),
        "training_hours_one_cpu_core": round(training_hours(args.work / f"{args.bundle}.log"), 2),
    }
    if args.note:
        provenance["note"] = args.note
    dest = args.dest or bundle_dir(args.bundle) / "models" / "generalist"
    dest.mkdir(parents=True, exist_ok=True)
    torch.save(weights, dest / "model.pt")
    write_model_info(dest, info["class_names"], info["voxel_size"], info["settings"], info["contrast"], provenance=provenance,
                     class_radii=class_radii(args.work / POOL[args.bundle], info["class_names"]))
    print(f"{dest}: {(dest / 'model.pt').stat().st_size / 1e6:.1f} MB, {provenance['schedule']['epochs_done']} epochs, {provenance['training_hours_one_cpu_core']} h")


if __name__ == "__main__":
    main()
