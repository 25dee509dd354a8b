"""RELION STAR particle files: both tomogram conventions, micrographs, and the errors."""

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import PicksError, make_picks, read_picks, write_picks
from cryoet_monai.data.star import read_star, star_geometry, write_star

VOXEL = 10.0
SHAPES = {"TS_1": (32, 64, 64), "TS_2": (40, 50, 60)}  # (nz, ny, nx)


def _picks_3d():
    a = make_picks("TS_1", ["ribosome", "apo-ferritin"], [[100.0, 200.0, 50.0], [10.0, 20.0, 30.0]], [0.9, 0.5])
    b = make_picks("TS_2", "ribosome", [[300.0, 150.0, 0.0]], 0.7)
    return pd.concat([a, b], ignore_index=True)


def test_relion5_centred_coordinates_by_hand(tmp_path):
    # voxel (x, y, z) = (10, 20, 5) in a 64 x 64 x 32 (x, y, z) tomogram at 10 Å:
    # centre = (32, 32, 16) voxels, so centred = (10 - 32, 20 - 32, 5 - 16) * 10 Å.
    picks = make_picks("TS_1", "ribosome", [[100.0, 200.0, 50.0]], 0.9)
    path = write_star(picks, tmp_path / "p.star", voxel_size=VOXEL, shapes=SHAPES)
    block = starfile.read(path)
    row = block.iloc[0]
    assert (row["rlnCenteredCoordinateXAngst"], row["rlnCenteredCoordinateYAngst"]) == (-220.0, -120.0)
    assert row["rlnCenteredCoordinateZAngst"] == -110.0
    assert row["rlnTomoName"] == "TS_1" and row["rlnClassNumber"] == 1
    assert row["cryoetParticleType"] == "ribosome" and row["rlnAutopickFigureOfMerit"] == pytest.approx(0.9)
    assert "rlnCoordinateX" not in block.columns


def test_relion5_round_trip_many_tomograms(tmp_path):
    picks = _picks_3d()
    path = write_picks(picks, tmp_path / "p.star", voxel_size=VOXEL, shapes=SHAPES)
    centred = starfile.read(path)[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst"]].to_numpy()
    # TS_2 is 60 x 50 x 40 voxels: centre (300, 250) Å in x, y
    np.testing.assert_allclose(centred[2], [0.0, -100.0])
    back = read_picks(path, voxel_size=VOXEL, shapes=SHAPES)
    pd.testing.assert_frame_equal(back, picks)


def test_classic_pixels_by_hand_and_round_trip(tmp_path):
    picks = _picks_3d()
    path = write_star(picks, tmp_path / "p.star", convention="classic", voxel_size={"TS_1": 10.0, "TS_2": 5.0})
    block = starfile.read(path)
    np.testing.assert_allclose(block[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()[[0, 2]],
                               [[10.0, 20.0, 5.0], [60.0, 30.0, 0.0]])
    assert "rlnCenteredCoordinateXAngst" not in block.columns
    back = read_star(path, voxel_size={"TS_1": 10.0, "TS_2": 5.0})
    pd.testing.assert_frame_equal(back, picks)


def test_micrograph_round_trip_in_pixels(tmp_path):
    picks = make_picks(["mic_1", "mic_2"], "beta-galactosidase", [[512.5, 40.0], [3.0, 4095.0]], [0.3, 1.0])
    path = write_picks(picks, tmp_path / "m.star")
    block = starfile.read(path)
    assert list(block.columns[:3]) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    assert block["rlnCoordinateX"].iloc[0] == 512.5
    pd.testing.assert_frame_equal(read_picks(path), picks)


def test_plain_relion_files_read_with_class_names_and_paths(tmp_path):
    path = tmp_path / "autopick.star"
    starfile.write(
        {"particles": pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/mic_7.mrc"] * 2,
                                    "rlnCoordinateX": [1.0, 2.0], "rlnCoordinateY": [3.0, 4.0],
                                    "rlnClassNumber": [2, 1]})},
        path,
    )
    picks = read_star(path, class_names=["a", "b"])
    assert picks["micrograph"].tolist() == ["mic_7", "mic_7"]
    assert picks["particle_type"].tolist() == ["b", "a"] and picks["score"].tolist() == [1.0, 1.0]
    assert read_star(path, particle_type="x", experiment="m")["particle_type"].tolist() == ["x", "x"]
    with pytest.raises(PicksError, match="no name in class_names"):
        read_star(path, class_names=["a"])


def test_missing_arguments_say_which(tmp_path):
    picks = _picks_3d()
    with pytest.raises(PicksError, match="`shapes`"):
        write_star(picks, tmp_path / "a.star", voxel_size=VOXEL)
    with pytest.raises(PicksError, match="`voxel_size`"):
        write_star(picks, tmp_path / "a.star", convention="classic")
    with pytest.raises(PicksError, match="no entry for 'TS_2'"):
        write_star(picks, tmp_path / "a.star", voxel_size=VOXEL, shapes={"TS_1": (32, 64, 64)})
    with pytest.raises(PicksError, match="unknown STAR convention"):
        write_star(picks, tmp_path / "a.star", convention="relion3")
    path = write_star(picks, tmp_path / "p.star", voxel_size=VOXEL, shapes=SHAPES)
    with pytest.raises(PicksError, match="`shapes`"):
        read_star(path, voxel_size=VOXEL)
    with pytest.raises(PicksError, match="`voxel_size`"):
        read_star(path, shapes=SHAPES)


def test_unreadable_star_names_the_file(tmp_path):
    bad = tmp_path / "bad.star"
    bad.write_text("not a star file\n")
    with pytest.raises(PicksError, match="bad.star"):
        read_star(bad)
    with pytest.raises(PicksError, match="not found"):
        read_star(tmp_path / "missing.star")


def test_geometry_from_a_manifest(make_manifest, tmp_path):
    manifest = load_manifest(make_manifest({"training": [("TS_1", [("ribosome", 100.0, 200.0, 50.0)], None)]}))
    geometry = star_geometry(manifest)
    assert geometry == {"voxel_size": {"TS_1": 10.0}, "shapes": {"TS_1": (40, 50, 60)}, "class_names": ["ribosome", "ferritin"]}
    truth = manifest.truth("training")
    path = write_picks(truth, tmp_path / "t.star", **geometry)
    assert starfile.read(path)["rlnCenteredCoordinateXAngst"].tolist() == [100.0 - 300.0]
    pd.testing.assert_frame_equal(read_picks(path, **geometry), truth)


def test_geometry_numbers_classes_in_manifest_order_whichever_are_picked(make_manifest, tmp_path):
    manifest = load_manifest(make_manifest({"training": [("TS_1", [("ferritin", 100.0, 200.0, 50.0)], None)]}))
    path = write_picks(manifest.truth("training"), tmp_path / "t.star", **star_geometry(manifest))
    table = starfile.read(path)
    assert table["rlnClassNumber"].tolist() == [2]  # manifest classes: ribosome, ferritin
    starfile.write({"particles": table.drop(columns="cryoetParticleType")}, path)  # as RELION tools may leave it
    assert read_picks(path, **star_geometry(manifest))["particle_type"].tolist() == ["ferritin"]
