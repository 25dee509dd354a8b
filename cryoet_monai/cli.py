"""``cryoet-monai``: the thin runner around the bundles, the data tools and the score.

Errors from bad input (manifests, picks, images, configs) are printed as one line naming the file and
the problem; ``--debug`` (or ``CRYOET_MONAI_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path

import yaml

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.runner import CommandError, root_cause, run_bundle, tracebacks_left_out_of_logs

PATH_KEYS = ("manifest", "output_dir", "split", "bundle_root", "ckpt_path")


def _parse_budget(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)\s*(%?)\s*", text)
    if not match:
        raise CommandError(f"--budget must look like '1%' or '0.01', got {text!r}")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0 < value <= 1:
        raise CommandError(f"--budget must be in (0, 100%], got {text!r}")
    return value


def parse_overrides(tokens: list[str]) -> dict:
    """``--key value`` pairs (and ``--key=value``) of a bundle run; values are parsed as YAML literals."""
    overrides, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise CommandError(f"expected --key value, got {token!r}")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise CommandError(f"{token} needs a value")
            key, value = token[2:], tokens[i + 1]
            i += 2
        overrides[key] = value if key in PATH_KEYS else _literal(value)
    return overrides


def _literal(value: str):
    """``3`` → 3, ``1e-3`` → 0.001, ``[32, 64]`` → list, ``true`` → True, ``null`` / ``None`` → None; anything else stays
    a string."""
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if parsed is None or value == "None":
        return None
    return parsed if isinstance(parsed, (list, bool)) else value


def cmd_run(args, extra):
    run_bundle(args.bundle, args.config, parse_overrides(extra), safe=args.safe, tracking=args.tracking)


def cmd_bundle(args, _):
    from cryoet_monai.sharing import pack_bundle, verify_bundle

    if args.bundle_command == "pack":
        out = args.out or f"{Path(str(bundle_dir(args.bundle))).name}.zip"
        print(f"wrote {pack_bundle(args.bundle, out)}")
        return
    problems, warnings = verify_bundle(args.path, check_network=not args.skip_network)
    for line in warnings:
        print(f"warning: {line}")
    for line in problems:
        print(f"problem: {line}")
    if problems:
        raise CommandError(f"{args.path}: {len(problems)} problem(s); do not run this bundle until they are resolved")
    print(f"{args.path}: ok (metadata, checksums, config audit" + ("" if args.skip_network else ", network input/output") + ")")


def cmd_synth(args, _):
    from cryoet_monai.data.budgets import budget_manifest
    from cryoet_monai.data.synthetic import synthesize

    manifest = synthesize(
        args.out, preset=args.preset, seed=args.seed, templates=args.templates, layout=args.layout, contrast=args.contrast
    )
    print(f"wrote {manifest}")
    if args.budget:
        fraction = _parse_budget(args.budget)
        out = manifest.with_name(f"manifest_budget_{fraction * 100:g}pct.json")
        print(f"wrote {budget_manifest(manifest, out, fraction=fraction, seed=args.seed)}")
    if args.shots:
        out = manifest.with_name(f"manifest_shots_{args.shots}.json")
        print(f"wrote {budget_manifest(manifest, out, shots=args.shots, seed=args.seed)}")


def cmd_evaluate(args, _):
    from cryoet_monai.data.manifest import load_manifest
    from cryoet_monai.data.picks import read_picks
    from cryoet_monai.metrics import format_score_table, score_picks

    manifest = load_manifest(args.manifest)
    if not any(item.picks is not None for item in manifest.items(args.split)):
        raise CommandError(f"{args.manifest}: the '{args.split}' split has no picks files, so there is no truth to score against")
    geometry = {}
    if str(args.pred).lower().endswith(".star"):
        from cryoet_monai.data.star import star_geometry

        geometry = star_geometry(manifest, args.split)
    result = score_picks(read_picks(args.pred, ndim=manifest.ndim, **geometry), manifest, args.split)
    print(json.dumps(result, indent=2) if args.json else format_score_table(result, manifest))


def cmd_baseline(args, _):
    from cryoet_monai.data.picks import write_picks
    from cryoet_monai.inference.blobs import pick_with_blobs

    pred = pick_with_blobs(args.manifest, args.split, threshold_std=args.threshold_std)

    print(f"wrote {write_picks(pred, Path(args.output_dir) / 'picks.csv')} ({len(pred)} picks)")


MULTI_PART_SUFFIXES = (".ome.zarr", ".nii.gz")


def image_id(path) -> str:
    """The id an image file stands for: its name without the image suffix (``TS_1.ome.zarr`` → ``TS_1``, ``a.b.mrc`` → ``a.b``)."""
    name = Path(path).name
    for suffix in MULTI_PART_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def cmd_convert(args, _):
    from cryoet_monai.data.picks import picks_ndim, read_picks, write_picks

    geometry, items, project = {}, [], None
    if args.manifest:
        from cryoet_monai.data.manifest import load_manifest
        from cryoet_monai.data.star import star_geometry

        manifest = load_manifest(args.manifest, check_points=False)
        items, project = [it for split in manifest.splits for it in manifest.items(split)], manifest.path.parent
        geometry = star_geometry(manifest)
    star_in, star_out = (str(path).lower().endswith(".star") for path in (args.input, args.output))
    picks = read_picks(args.input, **(geometry if star_in else {}))
    if star_out and picks_ndim(picks) == 3 and not args.manifest:
        raise CommandError(f"{args.output}: tomogram STAR files are in pixels or Å from the centre; give --manifest for the voxel sizes and shapes")
    if Path(args.output).name == "autopick.star":  # RELION picking output: the list and a coordinate file per micrograph
        from cryoet_monai.data.relion_picking import write_relion_picking

        micrographs = {it.id: str(it.image) for it in items}
        write_relion_picking(picks, Path(args.output).parent, micrographs, project, geometry.get("class_names"))
    else:
        write_picks(picks, args.output, **({"convention": args.convention, **geometry} if star_out else {}))
    print(f"wrote {len(picks)} picks to {args.output}")


def cmd_view(args, _):
    from cryoet_monai.data.picks import read_picks
    from cryoet_monai.data.readers import read_image
    from cryoet_monai.visualize import draw_overlay, item_picks

    volume, voxel_size = read_image(args.tomogram)
    picks = read_picks(args.picks)
    radii, truth, item_id = {}, None, args.id or image_id(args.tomogram)
    if args.manifest:
        from cryoet_monai.data.manifest import load_manifest

        manifest = load_manifest(args.manifest)
        item_id = args.id or next((it.id for items in manifest.splits.values() for it in items if Path(it.image).resolve() == Path(args.tomogram).resolve()), item_id)
        item = manifest.item(item_id)
        voxel_size = item.voxel_size
        radii = {c.name: c.radius for c in manifest.classes}
        if args.split:
            truth = item_picks(manifest.truth(args.split), item_id, manifest.ndim)
        elif item.picks is not None:  # the item's own annotation, whatever its split
            truth = manifest.read_item_picks(item)
    ndim = volume.ndim
    ids = sorted(set(picks.iloc[:, 0]))
    picks = item_picks(picks, item_id, ndim)
    if not len(picks) and ids:
        raise CommandError(f"{args.picks} has no picks for '{item_id}' (it has {ids[:5]}); name the item with --id")
    out = draw_overlay(volume, picks, args.out, voxel_size if ndim == 3 else 1.0, radii, truth, args.z, args.thickness, title=item_id)
    print(f"wrote {out}")


def cmd_manifest(args, _):
    if args.manifest_command == "from-copick":
        from cryoet_monai.data.copick_project import manifest_from_copick

        path = manifest_from_copick(
            args.config, args.out, tomo_type=args.tomo_type, voxel_spacing=args.voxel_spacing, user_id=args.user_id,
            session_id=args.session_id, contrast=args.contrast,
        )
        print(f"wrote {path}")
    elif args.manifest_command == "from-masks":
        from cryoet_monai.data.masks import manifest_from_masks

        print(f"wrote {manifest_from_masks(args.data_dir, args.template, args.out)}")
    elif args.manifest_command == "from-micrographs":
        from cryoet_monai.data.micrographs import manifest_from_micrographs

        path = manifest_from_micrographs(
            args.micrographs, args.exemplars, args.diameter_px, args.out, particle=args.particle,
            exemplars_micrograph=args.exemplars_micrograph, pixel_size=args.pixel_size, contrast=args.contrast,
        )
        print(f"wrote {path}")
    elif args.manifest_command == "check":
        from cryoet_monai.data.contrast import contrast_warnings
        from cryoet_monai.data.manifest import load_manifest, voxel_size_mismatches

        manifest = load_manifest(args.manifest, check_voxels=True)
        for mismatch in voxel_size_mismatches(manifest) + contrast_warnings(manifest):
            print(f"warning: {mismatch}", file=sys.stderr)
        counts = {split: len(manifest.items(split)) for split in manifest.splits}
        others = sorted({it.id for items in manifest.splits.values() for it in items if it.contrast != manifest.contrast})
        contrast = f"contrast {manifest.contrast}" + (f" (items {others} the other)" if others else "")
        print(f"{args.manifest}: ok — {manifest.ndim}D, {len(manifest.classes)} classes, {contrast}, items per split {counts}")
    elif args.manifest_command == "budget":
        from cryoet_monai.data.budgets import budget_manifest

        fraction = _parse_budget(args.fraction) if args.fraction else None
        print(f"wrote {budget_manifest(args.manifest, args.out, fraction=fraction, shots=args.shots, seed=args.seed)}")


def cmd_batch(args, extra):
    from cryoet_monai.batch import BatchPicker, parse_shard

    manifest = args.manifest or copick_batch_manifest(args.copick, Path(args.out), args.tomo_type, args.voxel_spacing)
    split = args.split if args.manifest else "test"
    picker = BatchPicker(args.bundle, manifest, args.out, split, args.config, parse_shard(args.shard), parse_overrides(extra), args.formats)
    counts = picker.run()
    print(f"batch: shard {picker.shard[0]}/{picker.shard[1]}: {counts}")
    if counts["failed"]:  # a non-zero exit, so that a cluster scheduler sees the shard as failed
        raise CommandError(f"batch: {counts['failed']} tomogram(s) failed (the others are picked); see {Path(args.out) / 'failures.json'}")


def copick_batch_manifest(config, out: Path, tomo_type: str, voxel_spacing: float) -> Path:
    """A manifest with every run of a copick project in the ``test`` split, for batch picking."""
    from cryoet_monai.data.copick_project import manifest_from_copick
    from cryoet_monai.data.manifest import load_manifest

    manifest = load_manifest(manifest_from_copick(config, out / "copick_manifest.json", tomo_type=tomo_type, voxel_spacing=voxel_spacing), check_points=False)
    manifest.splits = {"test": [item for items in manifest.splits.values() for item in items]}
    return manifest.save(out / "copick_manifest.json")


def cmd_report(args, _):
    from cryoet_monai.report import write_report

    if args.rerun:
        rerun_benchmarks(Path(args.out) / "rerun", Path(args.benchmarks))
    print(f"wrote {write_report(args.out, args.benchmarks)}")


def rerun_benchmarks(work: Path, benchmarks: Path) -> None:
    """Re-run the CPU benchmarks on freshly synthesised data (hours on 2 cores) before reporting."""
    import subprocess

    from cryoet_monai.data.synthetic import synthesize

    data = synthesize(work / "czii-bin2", preset="czii-bin2", seed=0).parent
    subprocess.run([sys.executable, str(benchmarks / "label_efficiency" / "run.py"), "--data", str(data), "--out", str(work / "label_efficiency"), "--preset", "cpu"], check=True)
    subprocess.run([sys.executable, str(benchmarks / "few_shot" / "run_few_shot.py"), "--data", str(data), "--out", str(work / "few_shot")], check=True)


def cmd_demo(args, _):
    from cryoet_monai.demo import run_demo

    run_demo(args.out, preset=args.preset, seed=args.seed, templates=args.templates, layout=args.layout, method=args.method)


CONTRAST_HELP = "dark: protein darker than ice, as reconstructed and recorded (default); bright: inverted images"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryoet-monai", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a bundle config: cryoet-monai run <bundle> <config> [--key value ...]")
    p.add_argument("bundle", help="bundle name (semietpicker, sasi, cryomae) or bundle folder")
    p.add_argument("config", help="config name (train, inference, ...) or path")
    p.add_argument("--safe", action="store_true", help="list code outside monai/torch/cryoet_monai in the config and refuse to run it")
    p.add_argument("--tracking", help="'mlflow': log parameters, losses and validation scores to <output_dir>/mlruns.db (or a MONAI tracking settings file)")
    p.set_defaults(func=cmd_run, extra=True)

    p = sub.add_parser("bundle", help="share bundles: pack into a zip with checksums, verify one received")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    b = bsub.add_parser("pack", help="zip configs, weights, docs and metadata (versions, SHA-256)")
    b.add_argument("bundle")
    b.add_argument("--out")
    b = bsub.add_parser("verify", help="check metadata, versions, checksums, network shapes and the config audit")
    b.add_argument("path", help="bundle zip or folder")
    b.add_argument("--skip-network", action="store_true")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("synth", help="write synthetic tomograms, picks and a manifest")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--templates", help="folder of <pdb>.mrc density templates (default: built-in procedural particles)")
    p.add_argument("--layout", help="folder of copick runs with real particle positions (default: random packing)")
    p.add_argument("--contrast", choices=["dark", "bright"], default="dark", help=CONTRAST_HELP)
    p.add_argument("--budget", help="also write a label-budget manifest covering this share of the training volume, e.g. 1%%")
    p.add_argument("--shots", type=int, help="also write a manifest with boxes around N particles per class")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("evaluate", help="score picks against a manifest split (the CZII score)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--pred", required=True, help="picks file (.csv, .star or copick .json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("convert", help="convert a picks file: CSV, RELION STAR (relion5, classic, warp) or copick JSON")
    p.add_argument("input", help="picks file (.csv, .star, copick .json)")
    p.add_argument("output", help="destination; its suffix chooses the format (micrographs: a path ending in autopick.star writes "
                                  "RELION picking output, the list and a coordinate file per micrograph beside it)")
    p.add_argument("--manifest", help="the manifest of the tomograms: voxel sizes and shapes that STAR coordinates need, class numbers")
    p.add_argument("--convention", choices=["relion5", "classic", "warp"], default="relion5",
                   help="tomogram STAR output: RELION 5 centred Å, RELION 3/4 pixels, or WarpTools ts_export_particles input (pixels, <id>.tomostar)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("baseline", help="zero-label blob picker (the floor every method must beat)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", required=True)
    p.add_argument("--threshold_std", type=float, default=4.0)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("view", help="draw a slab with picks circled by class (TP/FP/misses given a manifest)")
    p.add_argument("tomogram")
    p.add_argument("--picks", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--manifest")
    p.add_argument("--split", help="split whose truth marks TP/FP/misses (default: the item's own picks file, if it has one)")
    p.add_argument("--id", help="item id (default: the file name without suffix)")
    p.add_argument("--z", type=int)
    p.add_argument("--thickness", type=int, default=5)
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("manifest", help="manifest tools")
    msub = p.add_subparsers(dest="manifest_command", required=True)
    m = msub.add_parser("from-copick", help="convert a copick project into a manifest")
    m.add_argument("config")
    m.add_argument("--out", required=True)
    m.add_argument("--tomo-type", default="wbp")
    m.add_argument("--voxel-spacing", type=float, default=10.012)
    m.add_argument("--user-id")
    m.add_argument("--session-id")
    m.add_argument("--contrast", choices=["dark", "bright"], default="dark", help=CONTRAST_HELP)
    m = msub.add_parser("from-masks", help="complete a 2D manifest template with picks derived from disc masks")
    m.add_argument("data_dir", help="folder with images/ and masks/ (e.g. the EMPIAR-10017 micrographs)")
    m.add_argument("--template", default=str(Path(__file__).resolve().parent.parent / "data_manifests" / "empiar10017.json"))
    m.add_argument("--out", required=True)
    m = msub.add_parser("from-micrographs", help="a 2D manifest for few-shot picking: micrographs and a picks file of a few exemplars")
    m.add_argument("micrographs", nargs="+", help="micrograph files (MRC, TIFF, PNG, JPEG) or folders of them; those without exemplars become the test split")
    m.add_argument("--exemplars", required=True, help="picks file (CSV or RELION STAR, pixels) of the hand-picked particles")
    m.add_argument("--diameter-px", type=float, required=True, help="particle diameter in pixels")
    m.add_argument("--particle", help="class name (default: the exemplar file's)")
    m.add_argument("--exemplars-micrograph", help="micrograph id of a STAR file without rlnMicrographName or a CSV file without micrograph")
    m.add_argument("--pixel-size", type=float, help="Å per pixel (default: the MRC header, else 1)")
    m.add_argument("--out", required=True, help="manifest to write; exemplar picks go to picks/ beside it")
    m.add_argument("--contrast", choices=["dark", "bright"], default="dark", help=CONTRAST_HELP)
    m = msub.add_parser("check", help="load and validate a manifest")
    m.add_argument("manifest")
    m = msub.add_parser("budget", help="write a label-budget manifest")
    m.add_argument("manifest")
    m.add_argument("--out", required=True)
    m.add_argument("--fraction", help="share of the training volume, e.g. 1%%")
    m.add_argument("--shots", type=int)
    m.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("batch", help="sharded, resumable picking of many tomograms with a bundle")
    p.add_argument("bundle")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest")
    source.add_argument("--copick", help="copick config: pick every run of the project")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--config", default="inference", help="the bundle's inference config")
    p.add_argument("--shard", help="i/n: this worker's share (default: torchrun RANK/WORLD_SIZE, else all)")
    p.add_argument("--formats", nargs="*", default=["star"], choices=["star", "copick", "relion"],
                   help="merged outputs besides picks.csv (relion: micrographs' relion/autopick.star + coordinate files)")
    p.add_argument("--tomo-type", default="wbp")
    p.add_argument("--voxel-spacing", type=float, default=10.012)
    p.set_defaults(func=cmd_batch, extra=True)

    p = sub.add_parser("report", help="Markdown report with figures from the benchmark results")
    p.add_argument("--out", required=True)
    p.add_argument("--benchmarks", default=str(Path(__file__).resolve().parent.parent / "benchmarks"))
    p.add_argument("--rerun", action="store_true", help="re-run the CPU benchmarks first (long)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="synthesise a bin-2 tomogram, pick it with the shipped model and the blob floor, score, draw the overlay")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--preset", default="demo")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--templates")
    p.add_argument("--layout")
    p.add_argument("--method", choices=["auto", "semietpicker", "blobs"], default="auto")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = args.debug or os.environ.get("CRYOET_MONAI_DEBUG") == "1"
    try:
        with contextlib.nullcontext() if debug else tracebacks_left_out_of_logs():
            args.func(args, extra)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        cause = root_cause(err)
        message = str(cause) if cause is not err and str(cause) else str(err)
        print(f"error: {message.strip().splitlines()[-1] if len(message) > 2000 else message.strip()}", file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
