"""Synthetic tomograms over a spread of acquisitions: the training data of the shipped models.

One preset teaches a network one microscope. Real tomograms differ in voxel size, defocus, dose, tilt range
(often asymmetric), ice thickness and what else the ice holds, so every tomogram here draws its own acquisition
from :data:`SPREAD` (uniform in each range) and half of them use the density templates (``templates``) instead of
the procedural particles, half replay a real CZII layout (``layout``) instead of a random packing. Contrast is
physical (protein dark). Items carry their own voxel size: train with ``target_voxel_size``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F

from cryoet_monai.data.atomic import atomic_path
from cryoet_monai.data.manifest import Item, Manifest, ParticleClass
from cryoet_monai.data.picks import write_picks
from cryoet_monai.data.readers import write_mrc
from cryoet_monai.data.species import SPECIES_SETS
from cryoet_monai.data.synthetic import PRESETS, _finished, make_tomogram, resolve_settings

SPREAD = {
    "voxel_size": (12.0, 25.0),  # Å
    "extent_xy": (4500.0, 6300.0),  # Å, square field of view
    "ice_thickness": (1000.0, 2000.0),  # Å
    "defocus": (1.5, 5.0),  # µm underfocus
    "dose": (60.0, 160.0),  # e/Å² over the series
    "tilt_min": (-66.0, -42.0),  # degrees; drawn apart from tilt_max, so most ranges are asymmetric
    "tilt_max": (42.0, 66.0),
    "tilt_step": (2.0, 3.0),
    "ice_texture": (0.1, 0.5),
    "protein_potential": (2.0, 3.0),
    "crowding": (0.5, 1.5),
    "vesicles": (0, 4),
    "gold": (0, 8),
    "decoys": (0, 40),  # with templates only
    "background": (0.0, 1.5),  # std (in tomogram std) of a smooth field: uneven illumination and ice, as in real data
}
"""Ranges drawn per tomogram (floats uniform, integer pairs the per-tomogram min–max count)."""
# CZII runs whose layouts training may replay: the czii-bin2 test runs (TS_86_3, TS_99_9) and the layouts of the
# external evaluation phantom (TS_5_4, TS_73_6) are left out, so no evaluation sees a layout it was trained on.
TRAINING_LAYOUT_RUNS = ("TS_69_2", "TS_6_4", "TS_6_6")


def draw_acquisition(rng: np.random.Generator, with_templates: bool, spread: dict | None = None) -> dict:
    """Synthesis overrides of the ``czii-bin2`` preset for one tomogram.

    Args:
        rng: random generator of this tomogram.
        with_templates: whether its particles come from density templates (decoys need them).
        spread: ranges replacing those of :data:`SPREAD` (same keys).
    """
    ranges = {**SPREAD, **(spread or {})}

    def uniform(key):
        return float(rng.uniform(*ranges[key]))

    voxel_size, extent, thickness = uniform("voxel_size"), uniform("extent_xy"), uniform("ice_thickness")
    nxy = int(round(extent / voxel_size))
    nz = int(round((thickness + 300.0) / voxel_size))
    overrides = {
        "voxel_size": round(voxel_size, 3),
        "shape": (nxy, nxy, nz),
        "ice_fraction": thickness / (nz * voxel_size),
        **{key: round(uniform(key), 3) for key in ("defocus", "dose", "tilt_min", "tilt_max", "ice_texture", "protein_potential", "crowding")},
        "tilt_step": float(rng.choice([2.0, 3.0])),
        "vesicles": (0, int(rng.integers(*ranges["vesicles"], endpoint=True))),
        "gold": (0, int(rng.integers(*ranges["gold"], endpoint=True))),
        "decoys": (0, int(rng.integers(*ranges["decoys"], endpoint=True))) if with_templates else (0, 0),
    }
    return overrides


def smooth_background(shape_zyx, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A random field varying over about a quarter of the field of view (plus a tilted plane), of std ``amplitude``."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, 3, 5, 5)).astype(np.float32))  # about four cycles across
    field = F.interpolate(coarse, size=tuple(shape_zyx), mode="trilinear", align_corners=True)[0, 0].numpy()
    _, y, x = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape_zyx), indexing="ij")
    field = field / (field.std() + 1e-12) + rng.normal() * y + rng.normal() * x
    return (amplitude * (field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def synthesize_spread(
    out_dir, n_training: int, n_validation: int = 2, seed: int = 0, templates=None, layout=None, spread: dict | None = None,
    species: str = "czii",
) -> Path:
    """Write ``n_training + n_validation`` tomograms, each from its own acquisition, and a manifest; return its path.

    Resumable: a finished tomogram whose draw is unchanged is kept (``spread.json`` records every draw; the draw of
    tomogram ``k`` depends on ``seed`` and ``k`` only, so a larger set keeps the tomograms of a smaller one).

    Args:
        out_dir: output folder.
        n_training: items of the ``training`` split.
        n_validation: items of the ``validation`` split (threshold tuning, checkpoint choice).
        seed: tomogram ``k`` draws from ``default_rng([seed, k])``.
        templates: folder of density maps (CZII species and, for decoys, the SHREC species); None = procedural only.
        layout: folder of CZII runs; :data:`TRAINING_LAYOUT_RUNS` among them are replayed for half the tomograms.
        spread: ranges replacing those of :data:`SPREAD`, e.g. ``{"extent_xy": (1500, 2000)}`` for small tomograms.
        species: ``czii`` (the six CZII species) or ``generalist`` (pre-training: the SHREC templates and the
            procedural families, never a CZII species; needs ``templates``, packs at random, no decoys, the
            ``generalist`` preset's crowding scaled by the drawn one).
    """
    out = Path(out_dir)
    if species not in ("czii", "generalist"):
        raise ValueError(f"species must be 'czii' or 'generalist', got {species!r}")
    if species == "generalist" and templates is None:
        raise ValueError("the generalist species include the SHREC templates: give --templates (a folder with their <pdb>.mrc maps)")
    preset = "czii-bin2" if species == "czii" else species
    runs = [r for r in TRAINING_LAYOUT_RUNS if species == "czii" and layout is not None and (Path(layout) / r).is_dir()]
    ids = [f"spread_{k:03d}" for k in range(n_training + n_validation)]
    ranges = {**SPREAD, **(spread or {})}
    plans = []
    for k, item_id in enumerate(ids):
        rng = np.random.default_rng([seed, k])
        with_templates = templates is not None and (species != "czii" or rng.random() < 0.5)
        run = str(rng.choice(runs)) if runs and rng.random() < 0.5 else None
        overrides = draw_acquisition(rng, with_templates and species == "czii", ranges)
        overrides["crowding"] = round(overrides["crowding"] * PRESETS[preset]["crowding"], 3)
        plans.append({
            "id": item_id, "templates": with_templates, "layout_run": run, "overrides": overrides,
            "background": round(float(rng.uniform(*ranges["background"])), 3),
        })
    plans = json.loads(json.dumps(plans, default=list))
    sources = {"seed": seed, "templates": None if templates is None else str(Path(templates).resolve()),
               "layout": None if layout is None else str(Path(layout).resolve()), "species": species}
    record_path = out / "spread.json"
    earlier = {"species": "czii", **json.loads(record_path.read_text())} if record_path.is_file() else {}
    done = {p["id"]: p for p in earlier.get("items", [])} if {k: earlier.get(k) for k in sources} == sources else {}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps({**sources, "items": plans}, indent=2) + "\n")

    items = []
    for k, plan in enumerate(plans):
        settings = resolve_settings(preset, plan["overrides"])
        image, picks_path = out / "tomograms" / f"{plan['id']}.mrc", out / "picks" / f"{plan['id']}.csv"
        if not (done.get(plan["id"]) == plan and _finished(image, picks_path, settings["shape"])):
            start = time.perf_counter()
            rng = np.random.default_rng([seed, k, 1])
            tomogram, picks = make_tomogram(
                plan["layout_run"] or plan["id"], rng, settings, templates if plan["templates"] else None,
                layout if plan["layout_run"] else None,
            )
            tomogram += smooth_background(tomogram.shape, rng, plan["background"])
            picks["experiment"] = plan["id"]
            write_mrc(image, tomogram, settings["voxel_size"])
            write_picks(picks, picks_path)
            print(f"spread: {plan['id']} ({k + 1}/{len(plans)}, {settings['voxel_size']:g} Å, {len(picks)} particles) "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        items.append(Item(plan["id"], image.resolve(), picks_path.resolve(), None, settings["voxel_size"]))
    manifest = Manifest("synthetic-spread" if species == "czii" else f"synthetic-spread-{species}", 3,
                        float(np.median([it.voxel_size for it in items])),
                        [ParticleClass(s.name, s.radius, s.weight) for s in SPECIES_SETS[species]])
    manifest.splits = {"training": items[:n_training], "validation": items[n_training:]}
    return manifest.save(out / "manifest.json")
