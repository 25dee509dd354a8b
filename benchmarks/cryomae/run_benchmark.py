"""CryoMAE benchmark: few-shot micrograph picking beside the blob floor and a supervised 2D U-Net.

Tables (precision / recall / F1 with ``score_picks`` at hit_fraction 0.5 and 1.0):

* ``real``: the four EMPIAR-10017 micrographs (``--empiar DIR``), exemplars = a seeded random choice of
  ``--shots`` truth picks of the training micrograph, picking the three test micrographs;
* ``synthetic``: micrographs from :mod:`cryoet_monai.data.synthetic_2d` (``--templates DIR``: 1bxn particles and as many
  unannotated 1qvr decoys; procedural densities without templates).

Every method sees the same exemplars (written to ``<out>/<table>/exemplars.csv``) and the same
down-sampling (particle radius → ``--target-radius`` px). CryoMAE runs through the bundle configs
(``python -m monai.bundle run`` equivalents). Writes ``<out>/results_<tables>.json`` and ``<out>/results_<tables>.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import distance_transform_edt
from monai.bundle import run as bundle_run
from monai.networks.nets import BasicUNet

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import read_picks, within_border, write_picks
from cryoet_monai.data.readers import read_image
from cryoet_monai.inference.blobs import BlobPicker
from cryoet_monai.inference.exemplar import select_exemplars
from cryoet_monai.inference.peaks import find_peaks
from cryoet_monai.metrics import score_picks
from cryoet_monai.transforms.rescale import Rescale, rescale_factor, to_original, to_rescaled

CONFIGS = bundle_dir("cryomae") / "configs"


def load_rescaled(path, factor: float) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Normalised, rescaled ``(1, H, W)`` image and the original shape (the bundle's preprocessing)."""
    image, _ = read_image(path)
    image = (image - image.mean()) / (image.std() + 1e-8)
    return Rescale(factor)(torch.from_numpy(image)[None]), image.shape


def run_cryomae(manifest_path, exemplars_csv, out: Path, iterations: int, stride: int, extra: dict) -> pd.DataFrame:
    """Pre-train and pick with the bundle configs; returns the picks table."""
    common = {"manifest": str(manifest_path), "output_dir": str(out), "exemplars_file": str(exemplars_csv), **extra}
    bundle_run(config_file=str(CONFIGS / "pretrain.yaml"), epoch_length=iterations, **common)
    bundle_run(config_file=str(CONFIGS / "pick.yaml"), stride=stride, **common)
    return read_picks(out / "picks.csv")


def run_blobs(manifest, factor: float, dark: bool, border: float = 0.0, threshold_std: float = 4.0) -> pd.DataFrame:
    """The zero-label LoG floor on the same down-sampled images, positions mapped back to original pixels
    (picks closer than ``border`` original pixels to an edge dropped)."""
    particle = manifest.classes[0]
    picker = BlobPicker([particle.name], [particle.radius * factor], threshold_std=threshold_std, bright=not dark)
    tables = []
    for item in manifest.items("test"):
        image, shape = load_rescaled(item.image, factor)
        picks = picker(image[0].numpy()[None], 1.0, item.id)  # (1, H, W): a one-section volume
        xy = to_original(picks[["x", "y"]].to_numpy(), shape, tuple(image.shape[1:]))
        inside = within_border(xy, shape, border)
        tables.append(pd.DataFrame({"micrograph": item.id, "particle_type": particle.name, "x": xy[inside, 0], "y": xy[inside, 1], "score": picks["score"].to_numpy()[inside]}))
    return pd.concat(tables, ignore_index=True)


def disc_target(shape, centres_xy: np.ndarray, radius: float) -> torch.Tensor:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    target = np.zeros(shape, dtype=np.float32)
    for x, y in centres_xy:
        target[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = 1.0
    return torch.from_numpy(target)


def run_unet(manifest, exemplars: pd.DataFrame, factor: float, iterations: int, border: float = 0.0, crop: int = 64, seed: int = 0) -> pd.DataFrame:
    """Supervised 2D U-Net on the given particles only (the exemplars, or a whole annotation): disc targets, loss
    restricted to boxes around those particles.

    Each box spans ±1.5 radii around an exemplar (what an annotator labelled completely); crops are drawn
    around the exemplars, the loss (BCE + soft Dice) counts only pixels inside the boxes. Picks: peaks of the
    distance to the background of the map "probability ≥ 0.5" (a disc's centre is its deepest point, and touching discs
    keep separate maxima) at least one radius apart, at least ``border`` original pixels from an edge.
    """
    torch.manual_seed(seed)
    particle = manifest.classes[0]
    train = manifest.items("training")[0]
    image, shape = load_rescaled(train.image, factor)
    radius = particle.radius * factor
    centres = to_rescaled(exemplars[["x", "y"]].to_numpy(), shape, tuple(image.shape[1:]))
    target = disc_target(image.shape[1:], centres, radius)
    box = torch.zeros_like(target)
    for x, y in centres:
        half = 1.5 * radius
        box[max(int(y - half), 0) : int(y + half) + 1, max(int(x - half), 0) : int(x + half) + 1] = 1.0
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(16, 16, 32, 64, 128, 16))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    pad = crop
    padded = [torch.nn.functional.pad(t[None], (pad, pad, pad, pad))[0] for t in (image[0], target, box)]
    for _ in range(iterations):
        batch = []
        for _ in range(8):
            x, y = centres[rng.integers(len(centres))] + rng.uniform(-crop / 2, crop / 2, size=2)
            x0, y0 = int(x) - crop // 2 + pad, int(y) - crop // 2 + pad
            views = [t[y0 : y0 + crop, x0 : x0 + crop] for t in padded]
            k = int(rng.integers(4))
            batch.append([torch.rot90(v, k) for v in views])
        img, tgt, msk = (torch.stack([b[i] for b in batch])[:, None] for i in range(3))
        logits = net(img)
        prob = torch.sigmoid(logits)
        bce = (torch.nn.functional.binary_cross_entropy_with_logits(logits, tgt, reduction="none") * msk).sum() / msk.sum().clamp_min(1)
        dice = 1 - 2 * (prob * tgt * msk).sum() / ((prob + tgt) * msk).sum().clamp_min(1e-6)
        optimizer.zero_grad()
        (bce + dice).backward()
        optimizer.step()
    net.eval()
    tables = []
    for item in manifest.items("test"):
        image, shape = load_rescaled(item.image, factor)
        with torch.no_grad():
            h, w = image.shape[1:]
            ph, pw = (-h) % 16, (-w) % 16
            prob = torch.sigmoid(net(torch.nn.functional.pad(image[None], (0, pw, 0, ph))))[0, :, :h, :w]
        depth = torch.as_tensor(distance_transform_edt(prob.numpy() >= 0.5), dtype=torch.float32)
        points, _, _ = find_peaks(depth[None], min_distance=radius, thresholds=1.0)
        scores = prob[0][points[:, 1].long(), points[:, 2].long()]
        xy = to_original(points.numpy()[:, [2, 1]], shape, (h, w))
        inside = within_border(xy, shape, border)
        tables.append(pd.DataFrame({"micrograph": item.id, "particle_type": particle.name, "x": xy[inside, 0], "y": xy[inside, 1], "score": scores.numpy()[inside]}))
    return pd.concat(tables, ignore_index=True)


def scores(picks: pd.DataFrame, manifest) -> dict:
    """Precision / recall / F1 on the test split at half and one radius, and per test micrograph at half a radius."""
    name = manifest.classes[0].name
    out = {}
    for fraction in (0.5, 1.0):
        c = score_picks(picks, manifest, "test", hit_fraction=fraction)["classes"][name]
        out[f"hit{fraction}"] = {k: round(float(c[k]), 3) for k in ("precision", "recall", "f1", "tp", "fp", "fn")}
    out["per_micrograph_hit0.5"] = {}
    for item in manifest.items("test"):
        own = picks[picks["micrograph"].astype(str) == str(item.id)]
        c = score_picks(own, manifest, "test", hit_fraction=0.5, truth=manifest.read_item_picks(item))["classes"][name]
        out["per_micrograph_hit0.5"][item.id] = {k: round(float(c[k]), 3) for k in ("precision", "recall", "f1")}
    return out


def run_table(name: str, manifest_path: Path, out: Path, args) -> list[dict]:
    manifest = load_manifest(manifest_path)
    particle = manifest.classes[0]
    factor = rescale_factor(particle.radius, args.target_radius)
    train = manifest.items("training")[0]
    exemplars = select_exemplars(train.picks, train.id, args.shots, seed=args.seed)
    exemplars_csv = write_picks(exemplars, out / name / "exemplars.csv")
    rows = []

    def record(method, fn):
        start = time.time()
        picks = fn()
        write_picks(picks, out / name / f"{re.sub(r'[^a-z0-9]+', '_', method.lower()).strip('_')}_picks.csv")
        row = {"table": name, "method": method, "picks": len(picks), "seconds": round(time.time() - start, 1), **scores(picks, manifest)}
        print(json.dumps(row), flush=True)
        rows.append(row)

    border = args.border if name == "real" else 0.0
    extra = {"target_radius_px": args.target_radius, "num_exemplars": args.shots, "border": border, "reconstruction_warmup": args.reconstruction_warmup}
    record("CryoMAE", lambda: run_cryomae(manifest_path, exemplars_csv, out / name / "cryomae", args.iterations, args.stride, extra))
    if args.ablation:
        record("CryoMAE no self-cross (λ=0)", lambda: run_cryomae(manifest_path, exemplars_csv, out / name / "cryomae_mae_only", args.iterations, args.stride, {**extra, "self_cross_weight": 0.0}))
    for dark in (False, True):
        record(f"blob floor ({'dark' if dark else 'bright'} particles)", lambda dark=dark: run_blobs(manifest, factor, dark, border))
    record("2D U-Net on the exemplars", lambda: run_unet(manifest, exemplars, factor, args.unet_iterations, border))
    if args.unet_full:
        annotation = read_picks(train.picks)
        annotation = annotation[annotation["micrograph"].astype(str) == str(train.id)]
        record(f"2D U-Net on the whole training annotation ({len(annotation)} particles)", lambda: run_unet(manifest, annotation, factor, args.unet_full_iterations, border))
    return rows


def markdown(rows: list[dict], args) -> str:
    lines = [
        "# CryoMAE benchmark results",
        "",
        f"Command: `python benchmarks/cryomae/run_benchmark.py {args.command_line}`",
        "",
        f"{args.shots} exemplars (seed {args.seed}) from the training micrograph; particle radius down-sampled to "
        f"{args.target_radius} px; CryoMAE pre-training {args.iterations} iterations (the first {args.reconstruction_warmup} masked reconstruction alone), "
        f"similarity stride {args.stride} px; "
        f"U-Net {args.unet_iterations} iterations"
        f"{f' ({args.unet_full_iterations} on the whole training annotation)' if args.unet_full else ''}. Real micrographs: picks closer than {args.border} px to an edge dropped "
        "(every method; half a 256-px extraction box). CPU only.",
        "",
        "| table | method | picks | P@0.5r | R@0.5r | F1@0.5r | P@1r | R@1r | F1@1r | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["hit0.5"], r["hit1.0"]
        lines.append(
            f"| {r['table']} | {r['method']} | {r['picks']} | {a['precision']} | {a['recall']} | {a['f1']} | {b['precision']} | {b['recall']} | {b['f1']} | {r['seconds']} |"
        )
    for table in dict.fromkeys(r["table"] for r in rows):
        micrographs = list(next(r for r in rows if r["table"] == table)["per_micrograph_hit0.5"])
        lines += [
            "",
            f"Per test micrograph ({table}), precision / recall / F1 at 0.5 r:",
            "",
            "| method | " + " | ".join(micrographs) + " |",
            "|---|" + "---|" * len(micrographs),
        ]
        for r in (r for r in rows if r["table"] == table):
            cells = (r["per_micrograph_hit0.5"][m] for m in micrographs)
            lines.append(f"| {r['method']} | " + " | ".join(f"{c['precision']} / {c['recall']} / {c['f1']}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import shlex
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--empiar", type=Path, help="EMPIAR-10017 folder (images/, masks/); skipped when absent")
    parser.add_argument("--templates", type=Path, help="density templates for the synthetic table (procedural when absent)")
    parser.add_argument("--tables", nargs="+", default=["real", "synthetic"])
    parser.add_argument("--shots", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-radius", type=float, default=12.0)
    parser.add_argument("--iterations", type=int, default=3300, help="CryoMAE pre-training iterations in all (the bundle's epoch_length)")
    parser.add_argument("--reconstruction-warmup", type=int, default=3000, help="of those, masked reconstruction alone first")
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--unet-iterations", type=int, default=300)
    parser.add_argument(
        "--border", type=float, default=128.0,
        help="real micrographs: drop picks closer than this (original px) to an edge, every method (half the extraction box; "
        "the EMPIAR-10017 annotation of the training micrograph has no particle within 131 px of an edge)",
    )
    parser.add_argument("--ablation", action="store_true", help="also run CryoMAE without the self-cross loss (λ = 0)")
    parser.add_argument(
        "--unet-full", action="store_true",
        help="also train the U-Net on every annotated particle of the training micrograph: what the annotation allows with full labels",
    )
    parser.add_argument("--unet-full-iterations", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    args.command_line = shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    rows = []
    if "real" in args.tables and args.empiar is not None and args.empiar.is_dir():
        from cryoet_monai.data.masks import manifest_from_masks

        template = Path(__file__).resolve().parents[2] / "data_manifests" / "empiar10017.json"
        manifest_path = manifest_from_masks(args.empiar, template, args.out / "real" / "data" / "manifest.json")
        rows += run_table("real", manifest_path, args.out, args)
    if "synthetic" in args.tables:
        from cryoet_monai.data.synthetic_2d import synthesize_micrographs

        kwargs = {"templates": args.templates, "template": "1bxn.mrc", "decoy_template": "1qvr.mrc", "pixel_size": 5.0} if args.templates else {"radius": 14.0, "decoy_radius": 10.0}
        manifest_path = synthesize_micrographs(
            args.out / "synthetic" / "data", num_micrographs=4, shape=(768, 768), num_particles=100, num_decoys=100, snr=0.1, seed=args.seed, **kwargs
        )
        rows += run_table("synthetic", manifest_path, args.out, args)
    suffix = "_".join(args.tables)
    (args.out / f"results_{suffix}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / f"results_{suffix}.md").write_text(markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
