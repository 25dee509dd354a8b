"""MRC reading through MONAI LoadImage, header voxel size, and clear errors for broken files."""

import numpy as np
import pytest
from monai.transforms import LoadImaged

from cryoet_monai.data import readers
from cryoet_monai.data.readers import ImageFileError, check_finite_voxels, image_info, read_image, write_mrc


def test_mrc_round_trip_through_loadimaged(tmp_path):
    volume = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    path = write_mrc(tmp_path / "t.mrc", volume, 12.5)
    assert image_info(path) == ((5, 6, 7), 12.5)
    loaded = LoadImaged(keys="image", reader="cryoet_monai.data.readers.MRCReader", ensure_channel_first=True)({"image": str(path)})
    image = loaded["image"]
    assert tuple(image.shape) == (1, 5, 6, 7)
    assert image.meta["voxel_size"] == pytest.approx(12.5)
    np.testing.assert_array_equal(image[0].numpy(), volume)


def test_truncated_mrc_is_reported(tmp_path):
    path = write_mrc(tmp_path / "t.mrc", np.ones((4, 4, 4), np.float32), 10.0)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ImageFileError, match=r"t\.mrc: truncated MRC"):
        image_info(path)
    with pytest.raises(ImageFileError, match=r"t\.mrc: not a readable MRC"):
        read_image(path)


def test_nan_voxels_are_reported(tmp_path):
    volume = np.zeros((3, 3, 3), np.float32)
    volume[1, 1, 1] = np.nan
    path = write_mrc(tmp_path / "nan.mrc", volume, 10.0)
    with pytest.raises(ImageFileError, match=r"nan\.mrc: 1 voxel\(s\) are NaN"):
        read_image(path)


def test_loadimage_reports_the_mrc_readers_error(tmp_path):
    # LoadImage falls back to its other readers when one fails; their errors must not replace the MRC reader's
    volume = np.zeros((3, 3, 3), np.float32)
    volume[0, 0, 0] = np.inf
    path = write_mrc(tmp_path / "inf.mrc", volume, 10.0)
    load = LoadImaged(keys="image", reader="cryoet_monai.data.readers.MRCReader")
    with pytest.raises(ImageFileError, match=r"inf\.mrc: 1 voxel\(s\) are NaN or infinite"):
        load({"image": str(path)})


def test_check_finite_voxels_reads_every_slab(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "SLAB_BYTES", 2 * 4 * 5 * 4)  # two sections of 4 x 5 float32 per slab
    volume = np.zeros((7, 4, 5), np.float32)
    check_finite_voxels(write_mrc(tmp_path / "ok.mrc", volume, 10.0))
    volume[0, 0, 0], volume[6, 3, 4] = np.nan, -np.inf
    with pytest.raises(ImageFileError, match=r"bad\.mrc: 2 voxel\(s\) are NaN or infinite"):
        check_finite_voxels(write_mrc(tmp_path / "bad.mrc", volume, 10.0))


def test_pictures_read_as_2d(tmp_path):
    from PIL import Image

    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(tmp_path / "m.png")
    array, _ = read_image(tmp_path / "m.png")
    assert array.shape == (3, 4) and array[2, 3] == 11
    assert image_info(tmp_path / "m.png")[0] == (3, 4)


def test_check_finite_voxels_decodes_pictures(tmp_path):
    from PIL import Image

    path = tmp_path / "mic.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(path)
    check_finite_voxels(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut off: the header still reads
    with pytest.raises(ImageFileError, match="mic.png: not a readable picture"):
        check_finite_voxels(path)
