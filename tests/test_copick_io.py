"""copick picks JSON: round trips, copick's own reading of our overlay, and the real CZII files."""

import json

import numpy as np
import pandas as pd
import pytest

from cryoet_monai.data.copick_io import read_copick_picks, write_copick_overlay, write_copick_picks
from cryoet_monai.data.picks import PicksError, make_picks, read_picks, write_picks

CZII_COUNTS = {  # PROVENANCE.md: TS_5_4 and TS_99_9 rows
    "TS_5_4": {"apo-ferritin": 46, "beta-amylase": 10, "beta-galactosidase": 12, "ribosome": 31,
               "thyroglobulin": 30, "virus-like-particle": 11},
    "TS_99_9": {"apo-ferritin": 36, "beta-amylase": 21, "beta-galactosidase": 24, "ribosome": 65,
                "thyroglobulin": 49, "virus-like-particle": 13},
}


def test_round_trip_keeps_positions_and_scores(tmp_path):
    picks = make_picks("TS_5_4", "ribosome", [[4601.271, 601.066, 600.934], [10.0, 20.0, 30.0]], [0.25, 1.0])
    path = write_picks(picks, tmp_path / "ribosome.json", user_id="tester", session_id="7")
    raw = json.loads(path.read_text())
    assert (raw["pickable_object_name"], raw["user_id"], raw["session_id"], raw["run_name"]) == (
        "ribosome", "tester", "7", "TS_5_4")
    assert raw["unit"] == "angstrom" and raw["points"][0]["location"] == {"x": 4601.271, "y": 601.066, "z": 600.934}
    assert raw["points"][0]["transformation_"][0] == [1.0, 0.0, 0.0, 0.0]
    pd.testing.assert_frame_equal(read_picks(path), picks)


def test_translation_of_the_transformation_moves_the_centre(tmp_path):
    shift = [[1.0, 0.0, 0.0, 5.0], [0.0, 1.0, 0.0, -2.0], [0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.0, 1.0]]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({
        "pickable_object_name": "thyroglobulin", "user_id": "u", "session_id": "0", "run_name": None,
        "points": [{"location": {"x": 100.0, "y": 200.0, "z": 300.0}, "transformation_": shift}],
    }))
    picks = read_copick_picks(path, experiment="TS_1")
    np.testing.assert_allclose(picks[["x", "y", "z"]].to_numpy(), [[105.0, 198.0, 300.5]])
    assert picks["score"].tolist() == [1.0] and picks["particle_type"].tolist() == ["thyroglobulin"]
    with pytest.raises(PicksError, match="no run_name"):
        read_copick_picks(path)


def test_bad_files_and_tables_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"user_id": "u", "points": []}))
    with pytest.raises(PicksError, match="bad.json: not a copick picks file"):
        read_copick_picks(bad)
    bad.write_text("{")
    with pytest.raises(PicksError, match="not valid JSON"):
        read_copick_picks(bad)
    two_runs = make_picks(["TS_1", "TS_2"], "ribosome", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with pytest.raises(PicksError, match="one run and one object type"):
        write_copick_picks(two_runs, tmp_path / "x.json")
    with pytest.raises(PicksError, match="user_id 'my_tool' is not a valid copick name"):
        write_copick_picks(two_runs.iloc[:1], tmp_path / "x.json", user_id="my_tool")


def test_overlay_is_read_back_by_copick(tmp_path):
    copick = pytest.importorskip("copick")
    picks = pd.concat([
        make_picks("TS_1", "ribosome", [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]], [0.5, 0.75]),
        make_picks("TS_1", "apo-ferritin", [[1.0, 2.0, 3.0]], 0.25),
        make_picks("TS_2", "ribosome", [[7.0, 8.0, 9.0]], 1.0),
    ], ignore_index=True)
    written = write_copick_overlay(picks, f"local://{tmp_path / 'overlay'}", user_id="net", session_id="3")
    assert tmp_path / "overlay/ExperimentRuns/TS_1/Picks/net_3_ribosome.json" in written and len(written) == 3
    config = tmp_path / "copick.json"
    config.write_text(json.dumps({
        "config_type": "filesystem", "name": "test",
        "pickable_objects": [{"name": "ribosome", "is_particle": True, "label": 1, "radius": 150},
                             {"name": "apo-ferritin", "is_particle": True, "label": 2, "radius": 60}],
        "overlay_root": f"local://{tmp_path / 'overlay'}",
    }))
    root = copick.from_file(str(config))
    assert sorted(r.name for r in root.runs) == ["TS_1", "TS_2"]
    found = root.get_run("TS_1").get_picks(object_name="ribosome", user_id="net", session_id="3")
    assert len(found) == 1
    locations, _ = found[0].numpy()
    np.testing.assert_allclose(locations, [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    assert [p.score for p in found[0].points] == [0.5, 0.75]


@pytest.mark.parametrize("run", sorted(CZII_COUNTS))
def test_real_czii_picks_counts(shared_data, run):
    for particle, count in CZII_COUNTS[run].items():
        picks = read_picks(shared_data / "czii_picks" / run / f"{particle}.json")
        assert len(picks) == count, (run, particle)
        assert set(picks["experiment"]) == {run} and set(picks["particle_type"]) == {particle}
        voxels = picks[["x", "y", "z"]].to_numpy() / 10.012  # tomograms are 630 x 630 x 184 voxels
        assert (voxels > -0.5).all() and (voxels < [630, 630, 184]).all()
