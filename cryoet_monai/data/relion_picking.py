"""RELION picking output for micrographs ⇄ picks tables.

RELION (4 and 5) keeps the picks of a micrograph data set as one coordinate file per micrograph (a ``data_``
loop of ``rlnCoordinateX``, ``rlnCoordinateY`` in pixels, optionally ``rlnClassNumber`` and
``rlnAutopickFigureOfMerit``; files written here also name the class in ``cryoetParticleType``) and a list that pairs each micrograph with its file: a ``data_coordinate_files``
loop of ``rlnMicrographName`` and ``rlnMicrographCoordinates`` (``autopick.star`` of an AutoPick job,
``manualpick.star`` of a ManualPick job). Both paths are relative to the RELION project folder, which is what
Extract and the picking GUI read. Writing that pair lets RELION extract this package's picks; reading it
takes a lab's manual picks (e.g. CryoMAE exemplars) as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from cryoet_monai.data.picks import PicksError, empty_picks, picks_ndim, validate_picks
from cryoet_monai.data.star import MICROGRAPH_COLUMN, _image_id, particle_table, read_star

LIST_BLOCK = "coordinate_files"
COORDINATES_COLUMN = "rlnMicrographCoordinates"
LIST_NAME = "autopick.star"


def write_relion_picking(
    picks: pd.DataFrame,
    folder,
    micrographs: Mapping[str, str] | None = None,
    project_dir=None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write micrograph picks as RELION picking output: ``<folder>/coordinates/<id>.star`` per micrograph with
    picks, then ``<folder>/autopick.star`` listing them (written last and atomically: it exists only once every
    coordinate file does).

    Args:
        picks: a 2D picks table (pixels).
        folder: output folder.
        micrographs: ``{item id: micrograph file}``, the names RELION knows the micrographs by (default: the ids).
        project_dir: the RELION project folder; paths inside it are written relative to it, others absolute
            (default: the current directory).
        class_names: order that numbers the classes in ``rlnClassNumber`` (default: the sorted names in ``picks``).

    Returns:
        the path of ``autopick.star``.

    Raises:
        PicksError: tomogram picks (RELION 5 reads those from a particles file, ``picks.star``), or a class missing
            from ``class_names``.
    """
    import starfile

    from cryoet_monai.data.atomic import atomic_path

    folder = Path(folder)
    picks = validate_picks(picks, source=str(folder))
    if len(picks) and picks_ndim(picks) != 2:
        raise PicksError(f"{folder}: RELION coordinate files are for micrographs; write tomogram picks as a STAR particle file")
    project = Path(project_dir if project_dir is not None else os.getcwd()).resolve()
    micrographs = dict(micrographs or {})
    (folder / "coordinates").mkdir(parents=True, exist_ok=True)
    rows = []
    for item, table in picks.groupby("micrograph", sort=True) if len(picks) else []:
        path = folder / "coordinates" / f"{item}.star"
        coordinates = particle_table(table, path, class_names=class_names).drop(columns=MICROGRAPH_COLUMN)
        with atomic_path(path) as tmp:
            starfile.write({"": coordinates}, tmp)
        rows.append((_project_path(micrographs.get(str(item), str(item)), project), _project_path(path, project)))
    listing = pd.DataFrame(rows, columns=[MICROGRAPH_COLUMN, COORDINATES_COLUMN])
    with atomic_path(folder / LIST_NAME) as tmp:
        starfile.write({LIST_BLOCK: listing}, tmp)
    return folder / LIST_NAME


def is_coordinate_list(path) -> bool:
    """Whether a STAR file is a RELION list of coordinate files: it declares ``rlnMicrographCoordinates`` (a line scan,
    so a particle file is not parsed twice; an unreadable file is left to the particle reader, which names the problem)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            return any(line.lstrip().startswith(f"_{COORDINATES_COLUMN}") for line in lines)
    except OSError:
        return False


def read_relion_picking(
    path, experiment: str | None = None, particle_type: str | None = None, class_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read RELION picking output (a ``coordinate_files`` list and the files it names) as a 2D picks table.

    Each micrograph's item id is its file name without folder and suffix (``MotionCorr/job002/mic_001.mrc`` →
    ``mic_001``), as for STAR particle files. The coordinate files are looked up relative to the current directory,
    then relative to each folder above the list (RELION writes them relative to the project folder, two or three
    levels above a job's list).

    Args:
        path: ``autopick.star``, ``manualpick.star`` or any list with ``rlnMicrographName`` and
            ``rlnMicrographCoordinates``.
        experiment: item id for every pick, instead of the micrograph names.
        particle_type: class of every pick; needed when the files carry no ``rlnClassNumber``.
        class_names: names of ``rlnClassNumber`` 1, 2, ... when the files carry it.

    Raises:
        PicksError: a coordinate file that is missing or unreadable (as :func:`~cryoet_monai.data.star.read_star`
            names it), or picks without a class.
    """
    import starfile

    path = Path(path)
    blocks = starfile.read(path, always_dict=True, parse_as_string=[MICROGRAPH_COLUMN, COORDINATES_COLUMN])
    listing = next(t for t in blocks.values() if isinstance(t, pd.DataFrame) and COORDINATES_COLUMN in t.columns)
    if MICROGRAPH_COLUMN not in listing.columns:
        raise PicksError(f"{path}: coordinate list without '{MICROGRAPH_COLUMN}'")
    tables = []
    for micrograph, name in zip(listing[MICROGRAPH_COLUMN].astype(str), listing[COORDINATES_COLUMN].astype(str)):
        file = _find(name, path)
        if file.stat().st_size == 0:  # a micrograph without picks (a bare loop header reads as an empty table below)
            continue
        table = read_star(file, experiment=experiment or _image_id(micrograph), particle_type=particle_type, class_names=class_names)
        if len(table):
            tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else empty_picks(2)


def _project_path(path, project: Path) -> str:
    path = Path(path)
    absolute = path.resolve() if path.is_absolute() or path.exists() else None
    if absolute is None:
        return path.as_posix()  # a name, not a file here: kept as given
    try:
        return absolute.relative_to(project).as_posix()
    except ValueError:
        return absolute.as_posix()


def _find(name: str, listing: Path) -> Path:
    candidates = [Path(name)] + [folder / name for folder in listing.resolve().parents]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PicksError(f"{listing}: coordinate file '{name}' not found (looked in the current folder and the folders above the list)")
