"""Resampling to the network's voxel size keeps every Å position where it was."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import write_mrc
from cryoet_monai.data.star import write_star
from cryoet_monai.transforms import LoadPicksd, ResampleToVoxelSize, ResampleToVoxelSized, resampled_length


def _blob(shape, centre_voxels, sigma=3.0) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    return torch.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre_voxels)) / (2 * sigma**2))[None]


def _centroid(volume: torch.Tensor) -> np.ndarray:
    weights = volume[0].clamp(min=0).double()
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in weights.shape], indexing="ij")
    return np.array([float((g * weights).sum() / weights.sum()) for g in grids])


@pytest.mark.parametrize("source, target", [(10.0, 20.0), (10.0, 4.0), (10.0, 13.0)])
def test_a_particle_stays_at_its_angstrom_position(source, target):
    centre_angstrom = np.array([233.0, 301.0, 407.0])  # z, y, x
    volume = _blob((48, 64, 80), centre_angstrom / source, sigma=4.0)
    out = ResampleToVoxelSize(target)(volume, source)
    assert tuple(out.shape[1:]) == tuple(resampled_length(n, source / target) for n in volume.shape[1:])
    np.testing.assert_allclose(_centroid(out) * target, centre_angstrom, atol=0.02 * target)


def test_lengths_keep_voxel_zero_and_the_extent():
    assert resampled_length(630, 0.5) == 315  # voxel centres 0 … 629 → 0 … 628 (314 · 2)
    assert resampled_length(184, 0.5) == 92
    assert resampled_length(92, 2.0) == 183  # up-sampling adds no voxel beyond the last centre
    assert resampled_length(1, 0.25) == 1


def test_within_tolerance_nothing_is_resampled():
    volume = torch.rand(1, 8, 9, 10)
    assert ResampleToVoxelSize(10.0)(volume, 10.05) is volume
    d = ResampleToVoxelSized("image", 10.0)({"image": volume, "voxel_size": 10.05})
    assert d["image"] is volume and d["voxel_size"] == 10.05 and "original_voxel_size" not in d
    d = ResampleToVoxelSized("image", None)({"image": volume, "voxel_size": 25.0})
    assert d["image"] is volume and d["voxel_size"] == 25.0


def test_dictionary_version_records_what_relion_files_need():
    image = MetaTensor(torch.rand(1, 20, 30, 40), meta={"filename_or_obj": "tomo.mrc"})
    d = ResampleToVoxelSized("image", 20.0)({"image": image, "voxel_size": 10.0, "id": "tomo"})
    assert d["voxel_size"] == 20.0 and d["original_voxel_size"] == 10.0
    assert d["image_original_shape"] == (20, 30, 40) and tuple(d["image"].shape) == (1, 10, 15, 20)
    assert d["image"].meta["filename_or_obj"] == "tomo.mrc" and d["image"].meta["voxel_size"] == 20.0
    with pytest.raises(ValueError, match="positive"):
        ResampleToVoxelSized("image", 20.0)({"image": image, "voxel_size": 0.0})


@pytest.mark.parametrize("convention", ["relion5", "classic"])
def test_star_picks_of_a_resampled_tomogram_are_read_in_the_files_pixels(tmp_path, convention):
    """RELION files are in pixels (or Å from the centre) of the tomogram file: LoadPicksd must read them with the
    file's voxel size and shape, then place them on the resampled grid."""
    shape, voxel = (30, 40, 50), 10.0
    write_mrc(tmp_path / "tomo.mrc", np.zeros(shape, np.float32), voxel)
    xyz = np.array([[120.0, 250.0, 90.0], [400.0, 60.0, 210.0]])
    picks = make_picks("tomo", ["ribosome", "ribosome"], xyz)
    write_star(picks, tmp_path / "tomo.star", convention=convention, voxel_size=voxel, shapes=shape)
    write_picks(picks, tmp_path / "tomo.csv")
    loaded = {"image": MetaTensor(torch.zeros(1, *shape), meta={"filename_or_obj": str(tmp_path / "tomo.mrc")}),
              "voxel_size": voxel, "id": "tomo"}
    resampled = ResampleToVoxelSized("image", 25.0)(loaded)
    for name in ("tomo.star", "tomo.csv"):
        points = LoadPicksd("picks", classes=["ribosome"])({**resampled, "picks": str(tmp_path / name)})["points"]
        np.testing.assert_allclose(points, xyz[:, ::-1] / 25.0, atol=1e-4)
