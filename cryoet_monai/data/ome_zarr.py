"""OME-Zarr images (copick and CryoET Data Portal tomograms) read with ``zarr``.

The OME-NGFF ``multiscales`` metadata (v0.4 in the group's attributes, v0.5 under ``ome``) lists one dataset
per resolution level; level ``i`` is the array at ``datasets[i].path`` with the voxel size given by its
``scale`` transformation (times the multiscale-wide one, if any). The spatial axes must be the last three,
``z, y, x``, with isotropic voxels; leading axes (time, channel) must have length 1 and are dropped. Sizes are
converted to Å from the axes' ``unit``; an axis without a unit is taken to be in Å, as copick writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryoet_monai.data.readers import ImageFileError, _check_finite

ANGSTROMS_PER_UNIT = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4, "millimeter": 1e7, "meter": 1e10}
SPATIAL_AXES = ["z", "y", "x"]


def read_ome_zarr(path, level: int = 0) -> tuple[np.ndarray, float]:
    """Read one resolution level of an OME-Zarr image.

    Args:
        path: the ``.zarr`` folder (the multiscale group).
        level: index into the multiscales ``datasets`` (0 is full resolution).

    Returns:
        ``(array, voxel_size)``: float32 ``[z, y, x]`` and Å per voxel.

    Raises:
        ImageFileError: missing folder, malformed metadata, missing level, or non-finite values.
    """
    array, voxel_size = _open_level(Path(path), level)
    data = np.asarray(array[...], dtype=np.float32)
    return _check_finite(data.reshape(data.shape[-3:]), path), voxel_size


def ome_zarr_info(path, level: int = 0) -> tuple[tuple[int, int, int], float]:
    """Shape ``(nz, ny, nx)`` and voxel size (Å) of one level of an OME-Zarr image, without reading its data.

    Args:
        path: the ``.zarr`` folder.
        level: index into the multiscales ``datasets``.
    """
    array, voxel_size = _open_level(Path(path), level)
    return tuple(int(s) for s in array.shape[-3:]), voxel_size


def _open_level(path: Path, level: int):
    """The zarr array of ``level`` and its voxel size in Å, after checking the metadata."""
    import zarr

    if not path.is_dir():
        raise ImageFileError(f"{path}: OME-Zarr folder not found")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = group.attrs.asdict()
    except Exception as err:  # zarr raises different errors across versions for a folder that is no group
        raise ImageFileError(f"{path}: not a readable zarr group ({err})") from err

    def fail(problem):
        raise ImageFileError(f"{path}: {problem}")

    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        fail("no OME-NGFF 'multiscales' metadata in the group attributes")
    datasets = multiscales[0].get("datasets")
    if not isinstance(datasets, list) or not datasets:
        fail("'multiscales[0].datasets' is missing or empty")
    if not isinstance(level, int) or not 0 <= level < len(datasets):
        fail(f"level {level!r} does not exist (levels 0..{len(datasets) - 1})")
    dataset = datasets[level]
    if not isinstance(dataset, dict) or "path" not in dataset:
        fail(f"'multiscales[0].datasets[{level}]' has no 'path'")
    array = group.get(str(dataset["path"]))
    if not isinstance(array, zarr.Array):
        fail(f"level {level} points at '{dataset['path']}', which is not an array in the group")
    if array.ndim < 3 or any(s != 1 for s in array.shape[:-3]):
        fail(f"level {level} has shape {tuple(array.shape)}; expected [..., z, y, x] with leading axes of length 1")
    names, units = _axes(multiscales[0].get("axes"), array.ndim, fail)
    if names[-3:] != SPATIAL_AXES:
        fail(f"the last three axes are {names[-3:]}, expected {SPATIAL_AXES}")
    scale = _scale(dataset, array.ndim, fail) * _scale(multiscales[0], array.ndim, fail)
    sizes = []
    for name, unit, value in zip(names[-3:], units[-3:], scale[-3:]):
        if unit not in ANGSTROMS_PER_UNIT:
            fail(f"axis '{name}' has unknown unit '{unit}' (known: {sorted(ANGSTROMS_PER_UNIT)})")
        sizes.append(value * ANGSTROMS_PER_UNIT[unit])
    if not sizes[0] > 0 or not np.allclose(sizes, sizes[0], rtol=1e-3):
        fail(f"level {level} voxels are {sizes} Å (z, y, x); a tomogram needs positive, isotropic voxels")
    return array, float(sizes[-1])


def _axes(axes, ndim: int, fail) -> tuple[list[str], list[str]]:
    """Axis names and units; OME-NGFF before v0.3 has no axes and means ``t, c, z, y, x``."""
    if axes is None:
        return ["t", "c", "z", "y", "x"][-ndim:], ["angstrom"] * ndim
    if not isinstance(axes, list) or len(axes) != ndim:
        fail(f"'axes' {axes!r} do not match the {ndim} dimensions of the array")
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    units = [(a.get("unit") if isinstance(a, dict) else None) or "angstrom" for a in axes]
    return names, units


def _scale(owner: dict, ndim: int, fail) -> np.ndarray:
    """The product of ``scale`` transformations of a dataset or multiscale (ones when it has none)."""
    scale = np.ones(ndim)
    for transform in owner.get("coordinateTransformations") or []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            values = transform.get("scale")
            if not isinstance(values, list) or len(values) != ndim:
                fail(f"scale {values!r} does not match the {ndim} dimensions of the array")
            scale = scale * np.asarray(values, dtype=float)
    return scale
