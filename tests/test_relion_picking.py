"""RELION picking output (autopick.star + one coordinate file per micrograph): written for Extract, read back."""

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoet_monai.data.picks import PicksError, make_picks, read_picks
from cryoet_monai.data.relion_picking import write_relion_picking


def test_written_picks_are_listed_by_project_paths_and_read_back(tmp_path):
    project = tmp_path / "project"
    (project / "MotionCorr" / "job002").mkdir(parents=True)
    for name in ("mic_001.mrc", "mic_002.mrc"):
        (project / "MotionCorr" / "job002" / name).touch()
    picks = pd.concat([
        make_picks("mic_001", ["ribosome", "proteasome"], [[10.5, 20.25], [300.0, 41.0]], [0.9, 0.7]),
        make_picks("mic_002", ["proteasome"], [[7.0, 8.0]], [0.5]),
    ], ignore_index=True)
    micrographs = {m: str(project / "MotionCorr" / "job002" / f"{m}.mrc") for m in ("mic_001", "mic_002", "mic_003")}
    listing = write_relion_picking(picks, project / "CryoMAE" / "picks", micrographs, project, ["ribosome", "proteasome"])

    table = starfile.read(listing, always_dict=True)["coordinate_files"]
    assert list(table["rlnMicrographName"]) == ["MotionCorr/job002/mic_001.mrc", "MotionCorr/job002/mic_002.mrc"]
    assert list(table["rlnMicrographCoordinates"]) == ["CryoMAE/picks/coordinates/mic_001.star", "CryoMAE/picks/coordinates/mic_002.star"]
    first = starfile.read(project / table["rlnMicrographCoordinates"][0])
    np.testing.assert_allclose(first[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), [[10.5, 20.25], [300.0, 41.0]])
    assert list(first["rlnClassNumber"]) == [1, 2]

    back = read_picks(listing, class_names=["ribosome", "proteasome"])
    pd.testing.assert_frame_equal(back, picks, check_exact=False, atol=1e-4)


def test_a_manual_pick_job_is_read_from_anywhere(tmp_path, monkeypatch):
    """RELION lists coordinate files relative to the project folder, three levels above the job's list."""
    job = tmp_path / "project" / "ManualPick" / "job004"
    (job / "Movies").mkdir(parents=True)
    starfile.write({"": pd.DataFrame({"rlnCoordinateX": [100.0, 220.0], "rlnCoordinateY": [50.0, 75.0]})}, job / "Movies" / "a_manualpick.star")
    starfile.write({"coordinate_files": pd.DataFrame({
        "rlnMicrographName": ["MotionCorr/job002/Movies/a.mrc"],
        "rlnMicrographCoordinates": ["ManualPick/job004/Movies/a_manualpick.star"],
    })}, job / "manualpick.star")
    monkeypatch.chdir(tmp_path)
    picks = read_picks(job / "manualpick.star", particle_type="beta-galactosidase")
    assert list(picks["micrograph"]) == ["a", "a"] and set(picks["particle_type"]) == {"beta-galactosidase"}
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [[100.0, 50.0], [220.0, 75.0]])
    assert list(read_picks(job / "manualpick.star", particle_type="b", experiment="other")["micrograph"]) == ["other"] * 2

    with pytest.raises(PicksError, match="a_manualpick.star.*particle_type"):
        read_picks(job / "manualpick.star")  # no class in the files, none given
    (job / "Movies" / "a_manualpick.star").unlink()
    with pytest.raises(PicksError, match="manualpick.star: coordinate file 'ManualPick/job004/Movies/a_manualpick.star' not found"):
        read_picks(job / "manualpick.star", particle_type="b")


def test_no_picks_give_an_empty_list(tmp_path):
    listing = write_relion_picking(make_picks("mic_001", "ribosome", [[1.0, 2.0]]).iloc[:0], tmp_path / "relion")
    assert len(read_picks(listing)) == 0


def test_tomogram_picks_are_refused(tmp_path):
    picks = make_picks("TS_1", ["ribosome"], [[100.0, 200.0, 300.0]])
    with pytest.raises(PicksError, match="for micrographs"):
        write_relion_picking(picks, tmp_path / "relion")
    assert not (tmp_path / "relion" / "autopick.star").exists()


def test_convert_writes_relion_picking_output_named_as_in_the_manifest(tmp_path):
    import json

    from cryoet_monai.cli import main

    (tmp_path / "mics").mkdir()
    for name in ("a", "b"):
        (tmp_path / "mics" / f"{name}.png").touch()
    manifest = {"name": "m", "ndim": 2, "classes": [{"name": "bgal", "radius": 54}],
                "test": [{"id": "a", "image": "mics/a.png"}, {"id": "b", "image": "mics/b.png"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    picks = pd.concat([make_picks("a", "bgal", [[10.0, 20.0], [30.0, 40.0]]), make_picks("b", "bgal", [[5.0, 6.0]])], ignore_index=True)
    picks.to_csv(tmp_path / "picks.csv", index=False)
    out = tmp_path / "Import" / "autopick.star"
    assert main(["convert", str(tmp_path / "picks.csv"), str(out), "--manifest", str(tmp_path / "manifest.json")]) == 0
    listing = starfile.read(out)
    assert list(listing["rlnMicrographName"]) == ["mics/a.png", "mics/b.png"]
    assert list(listing["rlnMicrographCoordinates"]) == ["Import/coordinates/a.star", "Import/coordinates/b.star"]
    pd.testing.assert_frame_equal(read_picks(out), picks, check_exact=False, atol=1e-4)  # class names kept, no class_names needed


def test_micrographs_without_picks_are_skipped_and_a_broken_coordinate_file_is_named(tmp_path):
    """RELION may leave an empty file or a bare loop header for a micrograph without picks; anything else must parse."""
    coordinates = tmp_path / "coordinates"
    coordinates.mkdir()
    starfile.write({"": pd.DataFrame({"rlnCoordinateX": [100.0], "rlnCoordinateY": [50.0]})}, coordinates / "a.star")
    (coordinates / "b.star").touch()
    (coordinates / "c.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n")
    listing = tmp_path / "autopick.star"
    starfile.write({"coordinate_files": pd.DataFrame({
        "rlnMicrographName": [f"{m}.mrc" for m in "abc"], "rlnMicrographCoordinates": [str(coordinates / f"{m}.star") for m in "abc"],
    })}, listing)
    picks = read_picks(listing, particle_type="ribosome")
    assert list(picks["micrograph"]) == ["a"]
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [[100.0, 50.0]])

    (coordinates / "b.star").write_bytes(b"\x00\x01 not a STAR file")
    with pytest.raises(PicksError, match="b.star: no STAR loop with particle coordinates"):
        read_picks(listing, particle_type="ribosome")
