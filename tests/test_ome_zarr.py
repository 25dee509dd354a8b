"""OME-Zarr reading: a two-level pyramid written by hand with zarr (v2 on-disk format, as copick writes)."""

import json

import numpy as np
import pytest
import zarr

from cryoet_monai.data.ome_zarr import ome_zarr_info, read_ome_zarr
from cryoet_monai.data.readers import ImageFileError, image_info, read_image

V2 = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}


def write_pyramid(path, levels, voxel_size, unit="angstrom", leading=(), global_scale=None):
    """Write ``levels`` (arrays, each half the size of the previous) with OME-NGFF v0.4 metadata."""
    group = zarr.open_group(str(path), mode="w", **V2)
    axes = [{"name": n, "type": "channel"} for n in leading]
    axes += [{"name": n, "type": "space", "unit": unit} for n in "zyx"]
    datasets = []
    for i, data in enumerate(levels):
        data = data.reshape((1,) * len(leading) + data.shape)
        array = zarr.open_array(str(path / str(i)), mode="w", shape=data.shape, dtype=data.dtype, **V2)
        array[...] = data
        scale = [1.0] * len(leading) + [voxel_size * 2**i] * 3
        datasets.append({"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    multiscale = {"version": "0.4", "axes": axes, "datasets": datasets}
    if global_scale is not None:
        multiscale["coordinateTransformations"] = [{"type": "scale", "scale": global_scale}]
    group.attrs["multiscales"] = [multiscale]
    return path


@pytest.fixture
def pyramid():
    full = np.arange(8 * 12 * 16, dtype=np.float32).reshape(8, 12, 16)  # z, y, x
    return full, full.reshape(4, 2, 6, 2, 8, 2).mean(axis=(1, 3, 5))


def test_two_levels_read_back(tmp_path, pyramid):
    full, half = pyramid
    path = write_pyramid(tmp_path / "wbp.zarr", [full.astype(np.int16), half], 10.012)
    data, voxel_size = read_ome_zarr(path)
    assert data.dtype == np.float32 and voxel_size == 10.012
    np.testing.assert_array_equal(data, full)
    data, voxel_size = read_ome_zarr(path, level=1)
    np.testing.assert_array_equal(data, half)
    assert voxel_size == pytest.approx(20.024)
    assert ome_zarr_info(path, level=1) == ((4, 6, 8), pytest.approx(20.024))
    assert image_info(path) == ((8, 12, 16), 10.012)  # the generic readers dispatch on .zarr
    assert read_image(path, level=1)[0].shape == (4, 6, 8)


def test_units_channel_axis_and_global_scale(tmp_path, pyramid):
    full, _ = pyramid
    path = write_pyramid(tmp_path / "nm.zarr", [full], 1.0, unit="nanometer", leading=("c",), global_scale=[1, 2, 2, 2])
    data, voxel_size = read_ome_zarr(path)
    assert data.shape == (8, 12, 16) and voxel_size == 20.0


def test_ome_ngff_v05_metadata_under_ome(tmp_path, pyramid):
    full, _ = pyramid
    path = write_pyramid(tmp_path / "v05.zarr", [full], 5.0)
    group = zarr.open_group(str(path), mode="r+", **V2)
    group.attrs["ome"] = {"version": "0.5", "multiscales": group.attrs["multiscales"]}
    del group.attrs["multiscales"]
    assert ome_zarr_info(path) == ((8, 12, 16), 5.0)


def test_missing_level_and_malformed_metadata(tmp_path, pyramid):
    full, half = pyramid
    path = write_pyramid(tmp_path / "t.zarr", [full, half], 10.0)
    with pytest.raises(ImageFileError, match=r"level 2 does not exist \(levels 0..1\)"):
        read_ome_zarr(path, level=2)
    group = zarr.open_group(str(path), mode="r+", **V2)
    meta = group.attrs["multiscales"]
    meta[0]["datasets"][1]["path"] = "9"
    meta[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [10.0, 10.0, 20.0]
    group.attrs["multiscales"] = meta
    with pytest.raises(ImageFileError, match="'9', which is not an array"):
        ome_zarr_info(path, level=1)
    with pytest.raises(ImageFileError, match="isotropic"):
        ome_zarr_info(path)
    group.attrs["multiscales"] = [{"axes": meta[0]["axes"]}]
    with pytest.raises(ImageFileError, match="t.zarr: 'multiscales\\[0\\].datasets' is missing"):
        ome_zarr_info(path)
    del group.attrs["multiscales"]
    with pytest.raises(ImageFileError, match="no OME-NGFF 'multiscales'"):
        ome_zarr_info(path)
    with pytest.raises(ImageFileError, match="not found"):
        read_ome_zarr(tmp_path / "absent.zarr")
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "junk.json").write_text(json.dumps({}))
    with pytest.raises(ImageFileError, match="plain.zarr: not a readable zarr group"):
        ome_zarr_info(tmp_path / "plain.zarr")
