"""The picks table: one pandas DataFrame type that flows from readers to writers.

3D picks are ``experiment, particle_type, x, y, z, score`` with positions in Å
(position = voxel index × voxel size). 2D picks are ``micrograph, particle_type, x, y, score``
with positions in pixels. :func:`read_picks` and :func:`write_picks` dispatch on the file
suffix: ``.csv`` (the interchange format), ``.star`` (RELION) and ``.json`` (copick).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS_3D = ["experiment", "particle_type", "x", "y", "z", "score"]
COLUMNS_2D = ["micrograph", "particle_type", "x", "y", "score"]


class PicksError(ValueError):
    """A picks file or table that does not follow the contract."""


def columns_for(ndim: int) -> list[str]:
    """The contract columns for ``ndim`` = 2 (micrographs, px) or 3 (tomograms, Å)."""
    if ndim not in (2, 3):
        raise PicksError(f"picks have ndim 2 or 3, not {ndim}")
    return COLUMNS_3D if ndim == 3 else COLUMNS_2D


def item_column(ndim: int) -> str:
    """Name of the column that says which tomogram / micrograph a pick belongs to."""
    return columns_for(ndim)[0]


def coord_columns(ndim: int) -> list[str]:
    """Position columns in file order (``x, y[, z]``)."""
    return ["x", "y", "z"][:ndim]


def empty_picks(ndim: int = 3) -> pd.DataFrame:
    """An empty picks table with the contract columns and dtypes."""
    return make_picks("", "", np.zeros((0, ndim)), ndim=ndim)


def make_picks(item, particle_type, coords_xyz, score=1.0, ndim: int | None = None) -> pd.DataFrame:
    """Build a picks table from positions.

    Args:
        item: tomogram / micrograph id, one for all rows or one per row.
        particle_type: class name, one for all rows or one per row.
        coords_xyz: array ``(N, ndim)`` of positions in ``x, y[, z]`` order, in Å (3D) or px (2D).
        score: confidence, a scalar or one per row.
        ndim: 2 or 3; defaults to the second dimension of ``coords_xyz``.
    """
    coords = np.asarray(coords_xyz, dtype=float).reshape(len(coords_xyz), -1) if len(coords_xyz) else np.zeros(
        (0, ndim or 3)
    )
    ndim = ndim or coords.shape[1]
    if coords.shape[1] != ndim:
        raise PicksError(f"coordinates have {coords.shape[1]} columns, expected {ndim}")
    n = len(coords)
    table = {item_column(ndim): np.broadcast_to(np.asarray(item, dtype=object), (n,)).astype(str)}
    table["particle_type"] = np.broadcast_to(np.asarray(particle_type, dtype=object), (n,)).astype(str)
    for axis, name in enumerate(coord_columns(ndim)):
        table[name] = coords[:, axis]
    table["score"] = np.broadcast_to(np.asarray(score, dtype=float), (n,)).astype(float)
    return pd.DataFrame(table, columns=columns_for(ndim))


def within_border(coords_xyz, shape, border: float = 0.0) -> np.ndarray:
    """Mask of the positions at least ``border`` from every edge of an image (pixel-centre convention: the
    image spans ``-0.5 … n - 0.5`` along an axis of ``n`` pixels).

    Args:
        coords_xyz: ``(N, d)`` positions in ``x, y[, z]`` order, in pixels (voxels) of the image.
        shape: the image's spatial shape in array order (``[z,] y, x``).
        border: margin in pixels; e.g. half the extraction box, so every kept particle can be boxed.
    """
    coords = np.asarray(coords_xyz, dtype=float).reshape(-1, len(shape))
    upper = np.asarray(shape, dtype=float)[::-1] - 0.5 - border
    return np.all((coords >= border - 0.5) & (coords <= upper), axis=1)


def picks_ndim(picks: pd.DataFrame) -> int:
    """2 for micrograph picks, 3 for tomogram picks."""
    return 3 if "z" in picks.columns else 2


def validate_picks(picks: pd.DataFrame, source: str = "picks table", ndim: int | None = None) -> pd.DataFrame:
    """Check the contract columns and values; return the table with canonical column order and dtypes.

    Args:
        picks: the table to check.
        source: name used in error messages (usually the file path).
        ndim: expected dimensionality; inferred from the columns when omitted.

    Raises:
        PicksError: missing columns, wrong dimensionality, non-numeric or non-finite positions.
    """
    ndim = ndim or picks_ndim(picks)
    required = columns_for(ndim)
    missing = [c for c in required if c not in picks.columns and c != "score"]
    if missing:
        raise PicksError(f"{source}: missing column(s) {missing}; a {ndim}D picks table has {required}")
    picks = picks.copy()
    if "score" not in picks.columns:
        picks["score"] = 1.0
    for name in coord_columns(ndim) + ["score"]:
        values = pd.to_numeric(picks[name], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PicksError(f"{source}: column '{name}' is not a finite number in row {row + 1}: {picks[name].iloc[row]!r}")
        picks[name] = values.astype(float)
    for name in (item_column(ndim), "particle_type"):
        picks[name] = picks[name].astype(str)
    return picks[required].reset_index(drop=True)


def read_picks(path, ndim: int | None = None, **kwargs) -> pd.DataFrame:
    """Read a picks file: ``.csv`` (contract), ``.star`` (RELION: a particle file, or a micrograph picking job's list
    of coordinate files such as ``autopick.star``) or ``.json`` (copick).

    Args:
        path: the file.
        ndim: expected dimensionality (checked when given).
        kwargs: passed to the STAR or copick reader (e.g. ``voxel_size`` and ``shapes``; see
            :func:`cryoet_monai.data.star.star_geometry`). Of a CSV file, ``experiment`` and ``particle_type`` fill
            its item (``experiment`` / ``micrograph``) and ``particle_type`` columns where it has none (a hand-picked
            list of bare ``x, y`` positions); other arguments are not used.
    """
    path = Path(path)
    if not path.is_file():
        raise PicksError(f"{path}: picks file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            table = pd.read_csv(path, dtype={"experiment": str, "micrograph": str, "particle_type": str})
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise PicksError(f"{path}: not a readable CSV ({err})") from err
        fill = {item_column(ndim or picks_ndim(table)): kwargs.get("experiment"), "particle_type": kwargs.get("particle_type")}
        table = table.assign(**{name: value for name, value in fill.items() if value is not None and name not in table.columns})
    elif suffix == ".star":
        from cryoet_monai.data.relion_picking import is_coordinate_list, read_relion_picking
        from cryoet_monai.data.star import read_star

        if is_coordinate_list(path):
            wanted = ("experiment", "particle_type", "class_names")
            table = read_relion_picking(path, **{k: v for k, v in kwargs.items() if k in wanted})
        else:
            table = read_star(path, **kwargs)
    elif suffix == ".json":
        from cryoet_monai.data.copick_io import read_copick_picks

        table = read_copick_picks(path, **kwargs)
    else:
        raise PicksError(f"{path}: unknown picks format '{suffix}' (use .csv, .star or .json)")
    return validate_picks(table, source=str(path), ndim=ndim)


def write_picks(picks: pd.DataFrame, path, **kwargs) -> Path:
    """Write a picks table atomically (temporary file, then rename) as ``.csv``, ``.star`` or ``.json``.

    Args:
        picks: the table.
        path: destination; the suffix chooses the format.
        kwargs: passed to the STAR or copick writer.
    """
    from cryoet_monai.data.atomic import atomic_path

    path = Path(path)
    picks = validate_picks(picks, source=str(path))
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if suffix == ".csv":  # coordinates to 0.001 px / Å; scores to 1e-6, so a re-applied threshold keeps the same picks
            picks.round({**dict.fromkeys(coord_columns(picks_ndim(picks)), 3), "score": 6}).to_csv(tmp, index=False)
        elif suffix == ".star":
            from cryoet_monai.data.star import write_star

            write_star(picks, tmp, **kwargs)
        elif suffix == ".json":
            from cryoet_monai.data.copick_io import write_copick_picks

            write_copick_picks(picks, tmp, **kwargs)
        else:
            raise PicksError(f"{path}: unknown picks format '{suffix}' (use .csv, .star or .json)")
    return path
