"""RELION STAR particle files ⇄ picks tables (the STAR syntax itself is `starfile`'s job).

Tomograms (3D) come in three conventions:

- ``relion5``: RELION 5 tomography, ``rlnTomoName`` and ``rlnCenteredCoordinate{X,Y,Z}Angst``, in Å from the
  tomogram centre. RELION puts the centre at half the tomogram size (``tomogram_set.cpp``; copick's RELION
  export does the same), so ``centred Å = position Å - (size / 2) × voxel size`` with ``size`` in voxels
  along that axis. Converting needs ``voxel_size`` and each tomogram's ``shapes``.
- ``classic``: RELION 3/4 style, ``rlnTomoName`` (or ``rlnMicrographName``) and ``rlnCoordinate{X,Y,Z}`` in
  pixels of the tomogram (voxel index, so ``position Å = pixel × voxel size``). Converting needs ``voxel_size``.
- ``warp``: what ``WarpTools ts_export_particles --input_star`` reads: ``classic`` pixels (pass the voxel size as
  its ``--coords_angpix``) with the tilt series named in ``rlnMicrographName`` as ``<id>.tomostar``. Read back as
  ``classic``; the ``.tomostar`` suffix is dropped from the id.

Micrographs (2D) are ``rlnMicrographName, rlnCoordinateX, rlnCoordinateY`` in pixels, as in the picks table
(RELION's picking output, a list of per-micrograph coordinate files, is :mod:`cryoet_monai.data.relion_picking`).

Every file also carries ``rlnClassNumber`` (1-based), a readable class name in ``cryoetParticleType`` (RELION
keeps labels it does not know) and the score in ``rlnAutopickFigureOfMerit``. Particles go in a
``data_particles`` block.

Refined particle files also carry origin shifts, ``rlnOrigin{X,Y,Z}Angst`` (RELION 3.1 and later, Å) or
``rlnOrigin{X,Y,Z}`` (older, pixels): the particle's centre is the coordinate minus its shift (what RELION's
re-extraction with re-centring computes). Reading applies them; Å shifts of micrographs are converted with the
micrograph pixel size (the optics block's ``rlnMicrographPixelSize``, else ``voxel_size``). Files are written
with the centres in the coordinates and no shifts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cryoet_monai.data.picks import PicksError, coord_columns, item_column, make_picks, picks_ndim, validate_picks

CONVENTIONS = ("relion5", "classic", "warp")
ORIGIN_ANGSTROM_COLUMNS = ["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]
ORIGIN_PIXEL_COLUMNS = ["rlnOriginX", "rlnOriginY", "rlnOriginZ"]
CENTRED_COLUMNS = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
PIXEL_COLUMNS = ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]
TOMO_COLUMN = "rlnTomoName"
MICROGRAPH_COLUMN = "rlnMicrographName"
CLASS_COLUMN = "rlnClassNumber"
NAME_COLUMN = "cryoetParticleType"
SCORE_COLUMN = "rlnAutopickFigureOfMerit"
BLOCK = "particles"
_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map", ".st", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".eer", ".tomostar")


def read_star(
    path,
    voxel_size: float | Mapping[str, float] | None = None,
    shapes: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    experiment: str | None = None,
    particle_type: str | None = None,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a RELION STAR particle file as a picks table; the convention is recognised from the columns.

    Args:
        path: the STAR file. Uses its ``data_particles`` block, else the first block with coordinates.
        voxel_size: Å per voxel of the tomograms (one number, or ``{experiment: Å}``); needed for 3D files, and
            for micrographs with Å origin shifts but no ``rlnMicrographPixelSize`` in the optics block.
        shapes: ``(nz, ny, nx)`` of the tomograms (one shape, or ``{experiment: shape}``); needed for centred
            (RELION 5) coordinates.
        experiment: item name for every row; overrides ``rlnTomoName`` / ``rlnMicrographName``.
        particle_type: class name for every row; overrides the class columns.
        class_names: names of ``rlnClassNumber`` 1, 2, ... for files without a ``cryoetParticleType`` column.

    Raises:
        PicksError: unreadable file, missing columns, or a conversion that needs an argument not given.
    """
    table, optics = _particle_and_optics_blocks(Path(path))
    columns = set(table.columns)
    ndim = 3 if {"rlnCoordinateZ", "rlnCenteredCoordinateZAngst"} & columns else 2
    items = _item_names(table, path, ndim, experiment)
    types = _particle_types(table, path, particle_type, class_names)
    score = table[SCORE_COLUMN].to_numpy(float) if SCORE_COLUMN in columns else 1.0
    if ndim == 2:
        coords = _numbers(table, PIXEL_COLUMNS[:2], path)
    elif set(CENTRED_COLUMNS) <= columns:
        centres = _per_row(items, lambda e: _centre_angstrom(e, voxel_size, shapes, path))
        coords = _numbers(table, CENTRED_COLUMNS, path) + centres
    elif set(PIXEL_COLUMNS) <= columns:
        sizes = _per_row(items, lambda e: _lookup(voxel_size, e, "voxel_size", path, "pixel coordinates"))
        coords = _numbers(table, PIXEL_COLUMNS, path) * sizes.reshape(-1, 1)
    else:
        raise PicksError(f"{path}: a 3D particle file needs {CENTRED_COLUMNS} or {PIXEL_COLUMNS}")
    coords = coords - _origin_shifts(table, optics, items, ndim, voxel_size, path)
    return make_picks(items, types, coords, score, ndim=ndim)


def write_star(
    picks: pd.DataFrame,
    path,
    convention: str = "relion5",
    voxel_size: float | Mapping[str, float] | None = None,
    shapes: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a picks table as a RELION STAR particle file (any path: the suffix is not looked at).

    Args:
        picks: the picks table (3D in Å or 2D in px).
        path: destination.
        convention: ``relion5`` (centred Å), ``classic`` (pixels) or ``warp`` (pixels, ``<id>.tomostar``) for 3D
            picks; 2D picks are always pixels.
        voxel_size: Å per voxel (one number, or ``{experiment: Å}``); needed for 3D picks.
        shapes: ``(nz, ny, nx)`` (one shape, or ``{experiment: shape}``); needed for ``relion5``.
        class_names: order that numbers the classes in ``rlnClassNumber`` (default: the sorted names in ``picks``).

    Raises:
        PicksError: unknown convention, a class missing from ``class_names``, or a needed argument not given.
    """
    import starfile

    starfile.write({BLOCK: particle_table(picks, path, convention, voxel_size, shapes, class_names)}, path)
    return Path(path)


def particle_table(
    picks: pd.DataFrame,
    path,
    convention: str = "relion5",
    voxel_size: float | Mapping[str, float] | None = None,
    shapes: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The STAR particle loop of a picks table, as :func:`write_star` writes it (arguments as there; ``path`` is
    named in errors)."""
    if convention not in CONVENTIONS:
        raise PicksError(f"{path}: unknown STAR convention '{convention}' (use one of {list(CONVENTIONS)})")
    picks = validate_picks(picks, source=str(path))
    ndim = picks_ndim(picks)
    items = picks[item_column(ndim)].to_numpy(str)
    coords = picks[coord_columns(ndim)].to_numpy(float)
    table = {}
    if ndim == 2:
        table[MICROGRAPH_COLUMN] = items
        table.update(zip(PIXEL_COLUMNS[:2], coords.T))
    elif convention == "relion5":
        table[TOMO_COLUMN] = items
        centres = _per_row(items, lambda e: _centre_angstrom(e, voxel_size, shapes, path))
        table.update(zip(CENTRED_COLUMNS, (coords - centres).T))
    else:
        if convention == "warp":
            table[MICROGRAPH_COLUMN] = np.char.add(items, ".tomostar")
        else:
            table[TOMO_COLUMN] = items
        sizes = _per_row(items, lambda e: _lookup(voxel_size, e, "voxel_size", path, "pixel coordinates"))
        table.update(zip(PIXEL_COLUMNS, (coords / sizes.reshape(-1, 1)).T))
    table[CLASS_COLUMN] = _class_numbers(picks["particle_type"], class_names, path)
    table[NAME_COLUMN] = picks["particle_type"].to_numpy(str)
    table[SCORE_COLUMN] = picks["score"].to_numpy(float)
    return pd.DataFrame(table)


def star_geometry(manifest, split: str | None = None) -> dict:
    """``voxel_size`` and ``shapes`` of a manifest's tomograms and its ``class_names``, ready for ``read_star`` /
    ``write_star``; for micrographs, the pixel sizes the manifest declares (for Å origin shifts) and ``class_names``.

    ``read_picks(path, **star_geometry(manifest))`` reads RELION files of that data set in either convention;
    ``rlnClassNumber`` is the 1-based place of the class in the manifest, whichever classes a file holds.

    Args:
        manifest: a loaded :class:`~cryoet_monai.data.manifest.Manifest`.
        split: only this split's items; all items when None.
    """
    from cryoet_monai.data.readers import image_info

    splits = [split] if split is not None else list(manifest.splits)
    items = [it for name in splits for it in manifest.items(name)]
    if manifest.ndim == 2:  # pixel coordinates; an undeclared pixel size is not one to convert Å shifts with
        return {"voxel_size": {it.id: it.voxel_size for it in items if it.voxel_size_declared}, "class_names": manifest.class_names}
    return {
        "voxel_size": {it.id: it.voxel_size for it in items},
        "shapes": {it.id: tuple(image_info(it.image)[0]) for it in items},
        "class_names": manifest.class_names,
    }


def _particle_block(path: Path) -> pd.DataFrame:
    return _particle_and_optics_blocks(path)[0]


def _particle_and_optics_blocks(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particle loop of a STAR file and its ``data_optics`` loop (None when it has none)."""
    import starfile

    if not path.is_file():
        raise PicksError(f"{path}: STAR file not found")
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=[TOMO_COLUMN, MICROGRAPH_COLUMN, NAME_COLUMN])
    except Exception as err:  # starfile raises whatever its parser meets
        raise PicksError(f"{path}: not a readable STAR file ({err})") from err
    tables = {name: t for name, t in blocks.items() if isinstance(t, pd.DataFrame)}
    optics = tables.get("optics")
    if BLOCK in tables:
        return tables[BLOCK], optics
    for table in tables.values():
        if {"rlnCoordinateX", "rlnCenteredCoordinateXAngst"} & set(table.columns):
            return table, optics
    raise PicksError(f"{path}: no STAR loop with particle coordinates (blocks: {list(blocks)})")


def _item_names(table: pd.DataFrame, path, ndim: int, experiment: str | None) -> np.ndarray:
    if experiment is not None:
        return np.full(len(table), str(experiment))
    if ndim == 3 and TOMO_COLUMN in table.columns:
        return table[TOMO_COLUMN].astype(str).to_numpy()
    if MICROGRAPH_COLUMN in table.columns:
        return np.array([_image_id(name) for name in table[MICROGRAPH_COLUMN].astype(str)])
    wanted = f"'{TOMO_COLUMN}' or '{MICROGRAPH_COLUMN}'" if ndim == 3 else f"'{MICROGRAPH_COLUMN}'"
    raise PicksError(f"{path}: no {wanted} column; pass `experiment` to name the item of these picks")


def _image_id(name: str) -> str:
    """``MotionCorr/job002/mic_001.mrc`` → ``mic_001``: the id a manifest uses for that image."""
    base = PurePosixPath(name).name
    return base[: -len(PurePosixPath(base).suffix)] if PurePosixPath(base).suffix.lower() in _IMAGE_SUFFIXES else base


def _particle_types(table: pd.DataFrame, path, particle_type, class_names) -> np.ndarray:
    if particle_type is not None:
        return np.full(len(table), str(particle_type))
    if NAME_COLUMN in table.columns:
        return table[NAME_COLUMN].astype(str).to_numpy()
    if CLASS_COLUMN not in table.columns:
        raise PicksError(f"{path}: no '{NAME_COLUMN}' or '{CLASS_COLUMN}' column; pass `particle_type`")
    numbers = table[CLASS_COLUMN].to_numpy()
    if class_names is None:
        return numbers.astype(int).astype(str)
    bad = (numbers < 1) | (numbers > len(class_names))
    if bad.any():
        number = int(numbers[bad][0])
        raise PicksError(f"{path}: {CLASS_COLUMN} {number} has no name in class_names {list(class_names)}")
    return np.asarray(class_names, dtype=object)[numbers.astype(int) - 1].astype(str)


def _class_numbers(types: pd.Series, class_names, path) -> np.ndarray:
    names = list(class_names) if class_names is not None else sorted(set(types))
    unknown = sorted(set(types) - set(names))
    if unknown:
        raise PicksError(f"{path}: class(es) {unknown} are not in class_names {names}")
    return types.map({name: i + 1 for i, name in enumerate(names)}).to_numpy(int)


def _origin_shifts(table: pd.DataFrame, optics, items: np.ndarray, ndim: int, voxel_size, path) -> np.ndarray:
    """Each row's origin shift in the units of its coordinates (Å for tomograms, pixels for micrographs); zeros
    for a file without shifts. An axis without a shift column is not shifted."""
    shifts = np.zeros((len(table), ndim))
    for names, in_pixels in ((ORIGIN_ANGSTROM_COLUMNS, False), (ORIGIN_PIXEL_COLUMNS, True)):
        axes = [axis for axis in range(ndim) if names[axis] in table.columns]
        if axes:
            break
    else:
        return shifts
    values = _numbers(table, [names[axis] for axis in axes], path)
    if ndim == 3 and in_pixels:
        values = values * _per_row(items, lambda e: _lookup(voxel_size, e, "voxel_size", path, "pixel origin shifts")).reshape(-1, 1)
    elif ndim == 2 and not in_pixels:
        values = values / _micrograph_pixel_sizes(table, optics, items, voxel_size, path).reshape(-1, 1)
    shifts[:, axes] = values
    return shifts


def _micrograph_pixel_sizes(table: pd.DataFrame, optics, items: np.ndarray, voxel_size, path) -> np.ndarray:
    """Å per micrograph pixel of each row: its optics group's ``rlnMicrographPixelSize``, else ``voxel_size``."""
    column = "rlnMicrographPixelSize"
    if optics is not None and column in optics.columns and len(optics):
        sizes = dict(zip(optics.get("rlnOpticsGroup", pd.Series([1])).astype(int), optics[column].astype(float)))
        groups = table["rlnOpticsGroup"].astype(int) if "rlnOpticsGroup" in table.columns else pd.Series(np.ones(len(table), int))
        missing = sorted(set(groups) - set(sizes))
        if missing:
            raise PicksError(f"{path}: optics group(s) {missing} of the particles are not in the data_optics block")
        return groups.map(sizes).to_numpy(float)
    return _per_row(items, lambda e: _lookup(voxel_size, e, "voxel_size", path, "origin shifts in Å (to pixels: declare the micrographs' 'voxel_size' in the manifest, or add rlnMicrographPixelSize to data_optics)")).reshape(-1)


def _numbers(table: pd.DataFrame, columns: list[str], path) -> np.ndarray:
    values = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise PicksError(f"{path}: non-numeric coordinate in row {row + 1}: {table[columns].iloc[row].tolist()}")
    return values


def _lookup(value, experiment: str, name: str, path, purpose: str):
    """The value of argument ``name`` for ``experiment``: one value for all, or a mapping by experiment."""
    if value is None:
        raise PicksError(f"{path}: converting {purpose} needs the `{name}` argument")
    if isinstance(value, Mapping):
        if experiment not in value:
            raise PicksError(f"{path}: `{name}` has no entry for '{experiment}' (has {sorted(value)})")
        return value[experiment]
    return value


def _centre_angstrom(experiment: str, voxel_size, shapes, path) -> np.ndarray:
    """RELION's tomogram centre in Å, x-y-z: half the size in voxels, times the voxel size."""
    size = float(_lookup(voxel_size, experiment, "voxel_size", path, "centred (RELION 5) coordinates"))
    shape = _lookup(shapes, experiment, "shapes", path, "centred (RELION 5) coordinates")
    if len(shape) != 3:
        raise PicksError(f"{path}: shape of '{experiment}' must be (nz, ny, nx), got {tuple(shape)}")
    return np.asarray(shape[::-1], dtype=float) / 2 * size


def _per_row(items: np.ndarray, value_of) -> np.ndarray:
    """``value_of(item)`` for each row, computed once per distinct item."""
    values = {item: np.asarray(value_of(item), dtype=float) for item in dict.fromkeys(items)}
    if not values:
        return np.zeros((0, 3))
    return np.stack([values[item] for item in items])
