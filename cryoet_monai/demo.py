"""The README's main job: synthesise a bin-2 tomogram, pick it with the shipped model and the blob floor, score, draw."""

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


def format_comparison(results: dict[str, dict], weights: dict[str, float]) -> str:
    """Per-class precision, recall and F1 of several pickers side by side, then each one's CZII score and mean F1.

    Args:
        results: ``{picker name: score_picks result}`` on the same split.
        weights: class weights of the score.
    """
    names = list(results)
    classes = list(next(iter(results.values()))["classes"])
    width = max(len(c) for c in classes)
    header = f"{'':<{width}}        " + "".join(f" | {n:^23}" for n in names)
    columns = f"{'class':<{width}}  weight" + " |  prec.  recall     F1" * len(names)
    lines = [header, columns, "-" * len(columns)]
    for c in classes:
        cells = "".join(" | {precision:6.3f}  {recall:6.3f}  {f1:5.3f}".format(**results[n]["classes"][c]) for n in names)
        lines.append(f"{c:<{width}}  {weights[c]:6.1f}{cells}")
    lines.append("-" * len(columns))
    for label, key in (("CZII score (F-beta, beta 4)", "score"), ("mean F1 (scored classes)", "mean_f1")):
        lines.append(f"{label:<{width + 8}}" + "".join(f" | {results[n][key]:>23.3f}" for n in names))
    return "\n".join(lines)


def run_demo(out="demo_output", preset: str = "demo", seed: int = 1, templates=None, layout=None, method: str = "auto") -> dict:
    """Synthesise, pick (SemiETPicker's shipped model, or the blob floor), score beside the blob floor, draw an overlay.

    With the defaults the data is exactly what ``data_manifests/demo/manifest.json`` describes: one
    315 × 315 × 92 tomogram at 20.024 Å (CZII bin 2) of the six CZII species, protein dark.

    Args:
        out: output folder (data in ``out/data``, picks in ``out/picks``, overlay ``out/overlay.png``).
        preset: synthetic preset.
        seed: synthesis seed.
        templates: optional folder of density templates (default: built-in particles).
        layout: optional folder of real particle layouts.
        method: ``semietpicker``, ``blobs``, or ``auto`` (the bundle when its model is shipped).

    Returns:
        The score dict of the test split for ``method``.
    """
    from cryoet_monai.data.manifest import load_manifest
    from cryoet_monai.data.picks import read_picks, write_picks
    from cryoet_monai.data.readers import read_image
    from cryoet_monai.data.synthetic import synthesize
    from cryoet_monai.inference.blobs import pick_with_blobs
    from cryoet_monai.metrics import format_score_table, score_picks
    from cryoet_monai.runner import run_bundle
    from cryoet_monai.visualize import draw_overlay, item_picks

    out = Path(out).resolve()
    print(f"[1/4] synthesising '{preset}' tomograms into {out / 'data'}")
    manifest_path = synthesize(out / "data", preset=preset, seed=seed, templates=templates, layout=layout)
    manifest = load_manifest(manifest_path)
    if method == "auto":
        method = "semietpicker" if shipped_model() is not None else "blobs"
    picks_dir = out / "picks"
    print(f"[2/4] picking the test split with {method} and with the blob floor (no labels, no training)")
    blobs = pick_with_blobs(manifest_path, "test")
    write_picks(blobs, out / "blob_floor" / "picks.csv")
    if method == "semietpicker":  # the shipped model picks at the voxel size and contrast it was trained at
        run_bundle(method, "inference", {"manifest": str(manifest_path), "split": "test", "output_dir": str(picks_dir)})
    else:
        write_picks(blobs, picks_dir / "picks.csv")
    print("[3/4] scoring against the planted particles")
    pred = read_picks(picks_dir / "picks.csv", ndim=manifest.ndim)
    result = score_picks(pred, manifest, "test")
    if method == "blobs":
        print(format_score_table(result, manifest))
    else:
        floor = score_picks(blobs, manifest, "test")
        print(format_comparison({f"{method} (shipped)": result, "blob floor": floor}, {c.name: c.weight for c in manifest.classes}))
    item = manifest.items("test")[0]
    volume, _ = read_image(item.image)
    overlay = draw_overlay(
        volume,
        item_picks(pred, item.id),
        out / "overlay.png",
        item.voxel_size,
        {c.name: c.radius for c in manifest.classes},
        item_picks(manifest.truth("test"), item.id),
        thickness=9,
        title=f"{item.id}: {method} picks, slab of 9 slices low-passed for display (solid: true positive, dashed: false positive, x: missed)",
        sigma=1.5,
    )
    print(f"[4/4] wrote {overlay}")
    return result
