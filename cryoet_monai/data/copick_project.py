"""A copick project (static + overlay roots, as its config says) turned into a data manifest.

Each run becomes an item whose image is the run's OME-Zarr tomogram of one type at one voxel spacing, and whose
picks are the run's copick picks of the particle objects, converted to a picks CSV beside the manifest.
Classes come from the config's particle objects: their radius (Å), and the CZII score weight for the CZII
species (β-amylase 0, β-galactosidase and thyroglobulin 2), 1 for any other object; ``classes`` overrides both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from monai.utils import require_pkg

from cryoet_monai.data.copick_io import copick_picks_table
from cryoet_monai.data.contrast import check_contrast
from cryoet_monai.data.manifest import SPLITS, Item, Manifest, ManifestError, ParticleClass
from cryoet_monai.data.ome_zarr import ome_zarr_info
from cryoet_monai.data.picks import empty_picks, write_picks
from cryoet_monai.data.species import CZII_SPECIES

VOXEL_SPACING_TOLERANCE = 1e-3  # Å: copick names voxel-spacing folders with three decimals


@require_pkg(pkg_name="copick")
def manifest_from_copick(
    config,
    out,
    tomo_type: str = "wbp",
    voxel_spacing: float = 10.012,
    user_id: str | None = None,
    session_id: str | None = None,
    splits: Mapping[str, Sequence[str]] | None = None,
    classes: Mapping[str, Mapping[str, float]] | None = None,
    contrast: str = "dark",
) -> Path:
    """Write a manifest (and one picks CSV per annotated run) for the runs of a copick project.

    Args:
        config: the copick config JSON (filesystem projects with local static / overlay roots).
        out: the manifest file to write; picks go to ``<its folder>/picks/<run>.csv``.
        tomo_type: tomogram type to use as each run's image (e.g. ``wbp``, ``denoised``).
        voxel_spacing: voxel spacing (Å) of that tomogram.
        user_id: take only picks of this copick user (e.g. ``curation``); None takes any.
        session_id: take only picks of this session; None takes any.
        splits: ``{split: [run names]}``; runs not listed are left out. By default runs with picks go to
            ``training`` and runs without to ``unlabeled``.
        classes: per-class overrides ``{name: {"radius": Å, "weight": w}}`` of the config's values.
        contrast: polarity of the tomograms: ``dark`` (protein darker than ice: CryoET Data Portal, IMOD, AreTomo and
            Warp reconstructions) or ``bright`` (inverted).

    Returns:
        The manifest path. Image paths are relative to its folder when the project lies inside it.

    Raises:
        ManifestError: unknown runs or splits, a run without the tomogram, a class without radius, or picks from
            several users/sessions for one object when no ``user_id`` / ``session_id`` chooses between them.
    """
    import copick

    config, out = Path(config), Path(out).resolve()
    if not config.is_file():
        raise ManifestError(f"{config}: copick config not found")
    try:
        root = copick.from_file(str(config))
    except Exception as err:  # copick reports config problems as pydantic, JSON or fsspec errors
        raise ManifestError(f"{config}: cannot open the copick project ({err})") from err
    if root.config.config_type != "filesystem":
        raise ManifestError(
            f"{config}: a '{root.config.config_type}' project is not on local disk; a manifest needs a filesystem "
            "project (download the data first, e.g. with `copick sync`)"
        )
    particle_classes = _classes(root.config.pickable_objects, classes or {}, config)
    names = [c.name for c in particle_classes]
    runs = {run.name: run for run in root.runs}
    if splits is None:
        picks = {name: _run_picks(run, names, user_id, session_id, config) for name, run in runs.items()}
        splits = {
            "training": [name for name in runs if picks[name] is not None],
            "unlabeled": [name for name in runs if picks[name] is None],
        }
    else:
        splits = _check_splits(splits, runs, config)
        labeled = {name for split, run_names in splits.items() if split != "unlabeled" for name in run_names}
        picks = {name: _run_picks(runs[name], names, user_id, session_id, config) for name in labeled}

    check_contrast(contrast, "manifest from-copick")
    manifest = Manifest(root.config.name or config.stem, ndim=3, voxel_size=voxel_spacing, classes=particle_classes, contrast=contrast)
    for split, run_names in splits.items():
        items = []
        for name in run_names:
            image = _tomogram_path(runs[name], tomo_type, voxel_spacing, config)
            _, image_voxel_size = ome_zarr_info(image)
            picks_path = None  # unlabeled runs and runs without picks
            if picks.get(name) is not None:
                picks_path = write_picks(picks[name], out.parent / "picks" / f"{name}.csv")
            items.append(Item(name, image, picks_path, voxel_size=image_voxel_size, contrast=contrast))
        manifest.splits[split] = items
    return manifest.save(out)


def _classes(objects, overrides: Mapping[str, Mapping[str, float]], config: Path) -> list[ParticleClass]:
    particles = [o for o in objects if o.is_particle]
    unknown = sorted(set(overrides) - {o.name for o in particles})
    if unknown:
        raise ManifestError(f"{config}: class override(s) {unknown} name no particle object of the project")
    czii_weights = {s.name: s.weight for s in CZII_SPECIES}
    classes = []
    for obj in particles:
        values = {"radius": obj.radius, "weight": czii_weights.get(obj.name, 1.0), **overrides.get(obj.name, {})}
        if values["radius"] is None:
            raise ManifestError(f"{config}: object '{obj.name}' has no radius; give one in `classes`")
        classes.append(ParticleClass(obj.name, float(values["radius"]), float(values["weight"])))
    return classes


def _run_picks(run, class_names: list[str], user_id, session_id, config: Path) -> pd.DataFrame | None:
    """The run's picks of the declared classes from the chosen user / session; None when it has none."""
    found = run.get_picks(object_name=class_names, user_id=user_id, session_id=session_id)
    tables = []
    for name in class_names:
        sets = [p for p in found if p.pickable_object_name == name]
        owners = sorted({(p.user_id, p.session_id) for p in sets})
        if len(owners) > 1:
            raise ManifestError(
                f"{config}: run '{run.name}' has '{name}' picks from several (user, session) {owners}; "
                "choose with `user_id` / `session_id`"
            )
        tables += [copick_picks_table(p.load(), f"{config}: run '{run.name}'", experiment=run.name) for p in sets]
    if not tables:
        return None
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else empty_picks(3)


def _check_splits(splits: Mapping[str, Sequence[str]], runs: Mapping, config: Path) -> dict[str, list[str]]:
    for split, names in splits.items():
        if split not in SPLITS:
            raise ManifestError(f"{config}: unknown split '{split}' (use one of {list(SPLITS)})")
        missing = sorted(set(names) - set(runs))
        if missing:
            raise ManifestError(f"{config}: split '{split}' names run(s) {missing} not in the project ({sorted(runs)})")
    return {split: list(names) for split, names in splits.items()}


def _tomogram_path(run, tomo_type: str, voxel_spacing: float, config: Path) -> Path:
    spacings = [vs for vs in run.voxel_spacings if abs(vs.voxel_size - voxel_spacing) < VOXEL_SPACING_TOLERANCE]
    tomograms = [t for vs in spacings for t in vs.get_tomograms(tomo_type)]
    if not tomograms:
        available = {vs.voxel_size: sorted(t.tomo_type for t in vs.tomograms) for vs in run.voxel_spacings}
        raise ManifestError(
            f"{config}: run '{run.name}' has no '{tomo_type}' tomogram at {voxel_spacing} Å (it has {available})"
        )
    tomogram = tomograms[0]
    path = Path(tomogram.static_path if tomogram.read_only else tomogram.overlay_path)
    if not path.is_dir():
        raise ManifestError(f"{config}: tomogram of run '{run.name}' is not a local folder: {path}")
    return path
