"""The README's main job: synthesise a small tomogram set, pick the test tomogram, score it, draw it."""

from __future__ import annotations

from pathlib import Path

from cryoet_monai.bundles import bundle_dir


def shipped_model(bundle: str = "semietpicker") -> Path | None:
    """The bundle's trained weights, if they are shipped."""
    try:
        path = bundle_dir(bundle) / "models" / "model.pt"
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


def run_demo(out="demo_output", preset: str = "tiny", seed: int = 1, templates=None, layout=None, method: str = "auto") -> dict:
    """Synthesise, pick (SemiETPicker's shipped model, or the blob floor), score and draw an overlay.

    With the defaults the data is exactly what ``data_manifests/demo/manifest.json`` describes.

    Args:
        out: output folder (data in ``out/data``, picks in ``out/picks``, overlay ``out/overlay.png``).
        preset: synthetic preset.
        seed: synthesis seed.
        templates: optional folder of density templates (default: built-in particles).
        layout: optional folder of real particle layouts.
        method: ``semietpicker``, ``blobs``, or ``auto`` (the bundle when its model is shipped).

    Returns:
        The score dict of the test split.
    """
    from cryoet_monai.runner import run_bundle
    from cryoet_monai.data.manifest import load_manifest
    from cryoet_monai.data.picks import read_picks, write_picks
    from cryoet_monai.data.readers import read_image
    from cryoet_monai.data.synthetic import synthesize
    from cryoet_monai.inference.blobs import pick_with_blobs
    from cryoet_monai.metrics import format_score_table, score_picks
    from cryoet_monai.visualize import draw_overlay, item_picks

    out = Path(out).resolve()
    print(f"[1/4] synthesising '{preset}' tomograms into {out / 'data'}")
    manifest_path = synthesize(out / "data", preset=preset, seed=seed, templates=templates, layout=layout)
    manifest = load_manifest(manifest_path)
    if method == "auto":
        method = "semietpicker" if shipped_model() is not None else "blobs"
    picks_dir = out / "picks"
    print(f"[2/4] picking the test split with {method}")
    if method == "blobs":
        write_picks(pick_with_blobs(manifest_path, "test"), picks_dir / "picks.csv")
    else:  # the shipped model picks any preset at the voxel size and contrast it was trained at
        run_bundle(method, "inference", {"manifest": str(manifest_path), "split": "test", "output_dir": str(picks_dir)})
    pred = read_picks(picks_dir / "picks.csv", ndim=manifest.ndim)
    print("[3/4] scoring against the planted particles")
    result = score_picks(pred, manifest, "test")
    print(format_score_table(result, manifest))
    item = manifest.items("test")[0]
    volume, _ = read_image(item.image)
    truth = item_picks(manifest.truth("test"), item.id)
    overlay = draw_overlay(
        volume,
        item_picks(pred, item.id),
        out / "overlay.png",
        item.voxel_size,
        {c.name: c.radius for c in manifest.classes},
        truth,
        title=f"{item.id}: {method} picks (solid TP, dashed FP, x missed)",
    )
    print(f"[4/4] wrote {overlay}")
    return result
