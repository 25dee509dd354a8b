"""Picks CSV round trip and contract checks."""

import numpy as np
import pandas as pd
import pytest

from cryoet_monai.data.picks import PicksError, make_picks, read_picks, write_picks


def test_csv_round_trip_keeps_values(tmp_path):
    picks = make_picks(["TS_1", "TS_2"], ["ribosome", "apo-ferritin"], np.array([[1.5, 2.25, 3.0], [400.125, 5, 6]]), [0.9, 0.1])
    path = write_picks(picks, tmp_path / "p.csv")
    back = read_picks(path)
    assert list(back.columns) == ["experiment", "particle_type", "x", "y", "z", "score"]
    pd.testing.assert_frame_equal(back, picks)
    assert not list(tmp_path.glob("*.part"))


def test_csv_scores_keep_their_side_of_a_threshold(tmp_path):
    """Coordinates are written to 0.001, scores to 1e-6: a score just under 0.5 must not come back as 0.5."""
    picks = make_picks("TS_1", "ribosome", np.array([[1.23456, 2.0, 3.0], [4.0, 5.0, 6.0]]), [0.49996, 0.5])
    back = read_picks(write_picks(picks, tmp_path / "p.csv"))
    assert (back["score"] >= 0.5).tolist() == [False, True]
    assert back["score"].tolist() == [0.49996, 0.5] and back["x"].tolist() == [1.235, 4.0]


def test_2d_round_trip(tmp_path):
    picks = make_picks("mic_01", "beta-galactosidase", np.array([[10.0, 20.0]]))
    back = read_picks(write_picks(picks, tmp_path / "p.csv"), ndim=2)
    assert list(back.columns) == ["micrograph", "particle_type", "x", "y", "score"]
    assert back[["x", "y"]].to_numpy().tolist() == [[10.0, 20.0]]


def test_numeric_experiment_ids_stay_strings(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("experiment,particle_type,x,y,z,score\n007,ribosome,1,2,3,1\n")
    assert read_picks(path)["experiment"].tolist() == ["007"]


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("experiment,particle_type,x,y\nTS_1,ribosome,1,2\n")
    with pytest.raises(PicksError, match=r"p\.csv: missing column\(s\) \['z'\]"):
        read_picks(path, ndim=3)
    with pytest.raises(PicksError, match="not found"):
        read_picks(tmp_path / "absent.csv")
    with pytest.raises(PicksError, match="unknown picks format"):
        write_picks(make_picks("a", "b", np.zeros((1, 3))), tmp_path / "p.txt")
