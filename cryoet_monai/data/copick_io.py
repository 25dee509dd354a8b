"""copick picks JSON ⇄ picks tables, and picks written into a copick project's overlay.

A copick picks file holds the points of one object type in one run: ``pickable_object_name``, ``user_id``,
``session_id``, ``run_name``, ``voxel_spacing``, ``unit`` and ``points``, each with a ``location`` {x, y, z}
in Å, a 4×4 ``transformation_``, an ``instance_id`` and a ``score``. The particle centre is the location plus
the transformation's translation (copick's ``CopickPoint``); the picks table stores that centre.
The schema is copick's own pydantic model, so files are checked exactly as copick checks them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from monai.utils import optional_import, require_pkg

from cryoet_monai.data.picks import PicksError, make_picks, validate_picks

CopickPicksFile, _ = optional_import("copick.models", name="CopickPicksFile")
CopickPoint, _ = optional_import("copick.models", name="CopickPoint")
sanitize_name, _ = optional_import("copick.util.escape", name="sanitize_name")


@require_pkg(pkg_name="copick")
def read_copick_picks(path, experiment: str | None = None, particle_type: str | None = None) -> pd.DataFrame:
    """Read a copick picks JSON file as a picks table (Å).

    Args:
        path: the JSON file.
        experiment: run name for every row; overrides the file's ``run_name`` (needed when it is empty).
        particle_type: class name for every row; overrides the file's ``pickable_object_name``.

    Raises:
        PicksError: unreadable JSON, a file that breaks copick's schema, a unit other than Å, or no run name.
    """
    path = Path(path)
    if not path.is_file():
        raise PicksError(f"{path}: copick picks file not found")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise PicksError(f"{path}: not valid JSON ({err})") from err
    try:
        meta = CopickPicksFile.model_validate(raw)
    except ValueError as err:  # pydantic's ValidationError
        raise PicksError(f"{path}: not a copick picks file ({err})") from err
    return copick_picks_table(meta, str(path), experiment, particle_type)


def copick_picks_table(
    meta, source: str, experiment: str | None = None, particle_type: str | None = None
) -> pd.DataFrame:
    """A picks table (Å) from a ``CopickPicksFile`` (a parsed file, or what ``CopickPicks.load()`` returns).

    Args:
        meta: the copick picks metadata with its points.
        source: name used in error messages.
        experiment: run name for every row; overrides ``meta.run_name`` (needed when it is empty).
        particle_type: class name for every row; overrides ``meta.pickable_object_name``.
    """
    if meta.unit != "angstrom":
        raise PicksError(f"{source}: copick points in '{meta.unit}' are not supported (only 'angstrom')")
    run = experiment if experiment is not None else meta.run_name
    if not run:
        raise PicksError(f"{source}: the picks have no run_name; pass `experiment` to name the run")
    points = meta.points or []
    locations = np.array([[p.location.x, p.location.y, p.location.z] for p in points]).reshape(-1, 3)
    shifts = np.array([p.transformation[:3, 3] if p.transformation_ else np.zeros(3) for p in points]).reshape(-1, 3)
    scores = [1.0 if p.score is None else p.score for p in points]
    return make_picks(run, particle_type or meta.pickable_object_name, locations + shifts, scores, ndim=3)


@require_pkg(pkg_name="copick")
def write_copick_picks(picks: pd.DataFrame, path, user_id: str = "cryoet-monai", session_id: str = "0") -> Path:
    """Write the picks of one object type in one run as a copick picks JSON file (the path's suffix is not looked at).

    Args:
        picks: a 3D picks table (Å) with one ``experiment`` and one ``particle_type``.
        path: destination.
        user_id: copick user id (no underscores: copick splits file names on them).
        session_id: copick session id ("0" marks picks made by a tool).

    Raises:
        PicksError: 2D picks, several runs or object types, an empty table, or ids copick would not accept.
    """
    picks = validate_picks(picks, source=str(path), ndim=3)
    runs, objects = picks["experiment"].unique(), picks["particle_type"].unique()
    if len(runs) != 1 or len(objects) != 1:
        raise PicksError(
            f"{path}: a copick picks file holds one run and one object type, got runs {sorted(runs)} "
            f"and types {sorted(objects)}; use write_copick_overlay for many"
        )
    for what, name in (("user_id", user_id), ("session_id", session_id), ("object name", objects[0])):
        _check_copick_name(name, what, path)
    meta = CopickPicksFile(
        pickable_object_name=objects[0],
        user_id=user_id,
        session_id=session_id,
        run_name=runs[0],
        points=[
            CopickPoint(location={"x": x, "y": y, "z": z}, score=s)
            for x, y, z, s in picks[["x", "y", "z", "score"]].itertuples(index=False)
        ],
    )
    Path(path).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
    return Path(path)


@require_pkg(pkg_name="copick")
def write_copick_overlay(
    picks: pd.DataFrame, overlay_root, user_id: str = "cryoet-monai", session_id: str = "0"
) -> list[Path]:
    """Write picks into a copick overlay: ``ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json``.

    A copick project whose config names ``overlay_root`` then lists these picks under ``user_id`` / ``session_id``.

    Args:
        picks: a 3D picks table (Å), any number of runs and object types.
        overlay_root: the overlay folder (a plain path or a ``local://`` URL as in copick configs).
        user_id: copick user id.
        session_id: copick session id.

    Returns:
        The files written, one per run and object type present in ``picks``.
    """
    from cryoet_monai.data.atomic import atomic_path

    root = Path(str(overlay_root).removeprefix("local://"))
    picks = validate_picks(picks, source=str(root), ndim=3)
    written = []
    for (run, particle), group in picks.groupby(["experiment", "particle_type"], sort=True):
        path = root / "ExperimentRuns" / run / "Picks" / f"{user_id}_{session_id}_{particle}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            write_copick_picks(group, tmp, user_id=user_id, session_id=session_id)
        written.append(path)
    return written


def _check_copick_name(name: str, what: str, path) -> None:
    try:
        valid = sanitize_name(name, suppress_warnings=True) == name
    except ValueError:
        valid = False
    if not valid:
        raise PicksError(f"{path}: {what} '{name}' is not a valid copick name (no underscores, spaces or /\\:*?\"<>|)")
