"""RELION STAR particle files: the tomogram conventions (RELION 5, classic, Warp), micrographs, and the errors."""

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


def _refined(tmp_path, particles: dict, optics: dict | None = None):
    """A RELION particle file with origin shifts, as refinement and re-extraction leave it."""
    path = tmp_path / "refined.star"
    blocks = {"particles": pd.DataFrame(particles)}
    if optics is not None:
        blocks = {"optics": pd.DataFrame(optics), **blocks}
    starfile.write(blocks, path)
    return path


def test_origin_shifts_give_the_particle_centres(tmp_path):
    # RELION: centre = coordinate - origin; Å shifts of micrographs in micrograph pixels (optics, else voxel_size)
    mic = {"rlnMicrographName": ["mic_1.mrc", "mic_1.mrc"], "rlnCoordinateX": [100.0, 50.0], "rlnCoordinateY": [200.0, 60.0],
           "rlnOriginXAngst": [3.54, -1.77], "rlnOriginYAngst": [0.0, 7.08], "rlnOpticsGroup": [1, 2], "rlnClassNumber": [1, 1]}
    optics = {"rlnOpticsGroup": [1, 2], "rlnMicrographPixelSize": [1.77, 0.885]}
    picks = read_star(_refined(tmp_path, mic, optics), particle_type="bgal")
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [[98.0, 200.0], [52.0, 52.0]])
    no_optics = _refined(tmp_path, {k: v for k, v in mic.items() if k != "rlnOpticsGroup"})
    np.testing.assert_allclose(read_star(no_optics, voxel_size=1.77, particle_type="bgal")[["x", "y"]].to_numpy(), [[98.0, 200.0], [51.0, 56.0]])
    with pytest.raises(PicksError, match="refined.star: converting origin shifts in Å.*`voxel_size`"):
        read_star(no_optics, particle_type="bgal")
    legacy = {"rlnMicrographName": ["m"], "rlnCoordinateX": [10.0], "rlnCoordinateY": [20.0], "rlnOriginX": [2.5], "rlnOriginY": [-1.0]}
    np.testing.assert_allclose(read_star(_refined(tmp_path, legacy), particle_type="p")[["x", "y"]].to_numpy(), [[7.5, 21.0]])
    # tomograms: classic pixels at 10 Å, shifts in Å (or pixels); RELION 5 centred Å minus Å shifts
    classic = {"rlnTomoName": ["TS_1"], "rlnCoordinateX": [10.0], "rlnCoordinateY": [20.0], "rlnCoordinateZ": [5.0],
               "rlnOriginXAngst": [20.0], "rlnOriginYAngst": [-5.0], "rlnOriginZAngst": [0.0], "rlnClassNumber": [1]}
    got = read_star(_refined(tmp_path, classic), voxel_size=VOXEL, particle_type="ribosome")[["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(got, [[80.0, 205.0, 50.0]])
    old_pixels = {**{k: v for k, v in classic.items() if "Origin" not in k}, "rlnOriginX": [1.0], "rlnOriginY": [0.0], "rlnOriginZ": [-2.0]}
    got = read_star(_refined(tmp_path, old_pixels), voxel_size=VOXEL, particle_type="ribosome")[["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(got, [[90.0, 200.0, 70.0]])
    centred = {"rlnTomoName": ["TS_1"], "rlnCenteredCoordinateXAngst": [-220.0], "rlnCenteredCoordinateYAngst": [-120.0],
               "rlnCenteredCoordinateZAngst": [-110.0], "rlnOriginXAngst": [15.0], "rlnOriginYAngst": [0.0], "rlnOriginZAngst": [-10.0]}
    got = read_star(_refined(tmp_path, centred), voxel_size=VOXEL, shapes=SHAPES, particle_type="ribosome")[["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(got, [[85.0, 200.0, 60.0]])


def test_a_written_file_has_no_shifts_and_reads_back_the_same(tmp_path):
    picks = make_picks("mic_1", "bgal", [[98.0, 200.0]], 0.5)
    block = starfile.read(write_picks(picks, tmp_path / "m.star"))
    assert not [c for c in block.columns if c.startswith("rlnOrigin")]
    pd.testing.assert_frame_equal(read_picks(tmp_path / "m.star", voxel_size=1.77), picks)


def test_warp_input_is_classic_pixels_named_by_tomostar(tmp_path):
    picks = make_picks("TS_01", ["ribosome", "ribosome"], np.array([[100.0, 200.0, 50.0], [12.0, 24.0, 36.0]]))
    path = write_star(picks, tmp_path / "warp.star", convention="warp", voxel_size=10.0)
    table = starfile.read(path)
    assert list(table["rlnMicrographName"]) == ["TS_01.tomostar"] * 2 and "rlnTomoName" not in table.columns
    np.testing.assert_allclose(table[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(), [[10.0, 20.0, 5.0], [1.2, 2.4, 3.6]])
    back = read_star(path, voxel_size=10.0)
    assert list(back["experiment"]) == ["TS_01"] * 2
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), picks[["x", "y", "z"]].to_numpy(), atol=1e-4)
