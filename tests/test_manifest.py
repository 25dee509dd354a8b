"""Manifests load, round-trip and fail with clear messages naming the file and the problem."""

import json

import numpy as np
import pytest

from cryoet_monai.data.manifest import ManifestError, load_manifest
from cryoet_monai.data.readers import write_mrc

ROWS = [("ribosome", 100, 200, 150), ("ferritin", 300, 100, 50)]


def test_load_and_save_round_trip(make_manifest, tmp_path):
    path = make_manifest({"training": [("TS_1", ROWS, [[0, 0, 0, 400, 400, 300]])], "unlabeled": [("TS_2", None, None)]})
    manifest = load_manifest(path)
    assert manifest.class_names == ["ribosome", "ferritin"]
    assert [it.id for it in manifest.items("training")] == ["TS_1"]
    assert manifest.items("test") == []
    assert len(manifest.truth("training")) == 2
    copy = manifest.save(tmp_path / "copy.json")
    again = load_manifest(copy)
    assert again.to_dict() == manifest.to_dict()
    assert again.items("training")[0].image == manifest.items("training")[0].image


def test_missing_image_names_the_file(make_manifest, tmp_path):
    path = make_manifest({"test": [("TS_1", ROWS, None)]})
    (tmp_path / "tomograms" / "TS_1.mrc").unlink()
    with pytest.raises(ManifestError, match=r"image not found: .*TS_1\.mrc"):
        load_manifest(path)


def test_undeclared_class(make_manifest):
    path = make_manifest({"test": [("TS_1", ROWS + [("proteasome", 10, 10, 10)], None)]})
    with pytest.raises(ManifestError, match=r"TS_1\.csv has class\(es\) \['proteasome'\] not declared"):
        load_manifest(path)


def test_point_outside_tomogram(make_manifest):
    # tomogram is 60 × 50 × 40 voxels (x, y, z) at 10 Å: x = 700 Å is outside
    path = make_manifest({"test": [("TS_1", [("ribosome", 700, 100, 100)], None)]})
    with pytest.raises(ManifestError, match="outside the image"):
        load_manifest(path)


@pytest.mark.parametrize(
    "box, message",
    [([0, 0, 0, 10, 10], "must be 6 finite numbers"), ([0, 0, 50, 10, 10, 40], "lo >= hi"), ("all", "list of boxes")],
)
def test_malformed_boxes(make_manifest, box, message):
    boxes = box if isinstance(box, str) else [box]
    with pytest.raises(ManifestError, match=message):
        load_manifest(make_manifest({"test": [("TS_1", ROWS, boxes)]}))


def test_wrong_ndim(make_manifest, tmp_path):
    with pytest.raises(ManifestError, match="'ndim' must be 2"):
        load_manifest(make_manifest({"test": [("TS_1", ROWS, None)]}, extra={"ndim": 4}))
    path = make_manifest({"test": [("TS_1", None, None)]}, extra={"ndim": 2})
    with pytest.raises(ManifestError, match="has 3 dimensions"):
        load_manifest(path)


def test_nan_in_picks(make_manifest, tmp_path):
    path = make_manifest({"test": [("TS_1", ROWS, None)]})
    csv = tmp_path / "picks" / "TS_1.csv"
    csv.write_text(csv.read_text().replace(",200.0,", ",nan,", 1))
    with pytest.raises(ManifestError, match=r"TS_1\.csv: column 'y' is not a finite number"):
        load_manifest(path)


def test_nan_voxel_in_image(make_manifest, tmp_path):
    path = make_manifest({"unlabeled": [("TS_1", None, None)]})
    volume = np.zeros((40, 50, 60), np.float32)
    volume[39, 49, 59] = np.nan
    write_mrc(tmp_path / "tomograms" / "TS_1.mrc", volume, 10.0)
    with pytest.raises(ManifestError, match=r"item 'TS_1': .*TS_1\.mrc: 1 voxel\(s\) are NaN or infinite"):
        load_manifest(path, check_voxels=True)
    assert load_manifest(path).items("unlabeled")  # a run's manifest load reads headers only; the reader stops at the NaN


@pytest.mark.parametrize("convention", ["relion5", "classic"])
def test_star_picks_of_a_tomogram(make_manifest, tmp_path, convention):
    from cryoet_monai.data.picks import write_picks
    from cryoet_monai.transforms.picks import LoadPicksd

    path = make_manifest({"training": [("TS_1", ROWS, None)]})
    csv = load_manifest(path).truth("training")
    # centred Å need the 60 x 50 x 40 voxel shape and the 10 Å voxels; pixels need the voxel size
    write_picks(csv, tmp_path / "picks" / "TS_1.star", convention=convention, voxel_size=10.0, shapes=(40, 50, 60))
    raw = json.loads(path.read_text())
    raw["training"][0]["picks"] = "picks/TS_1.star"
    path.write_text(json.dumps(raw))
    manifest = load_manifest(path)
    np.testing.assert_allclose(manifest.truth("training")[["x", "y", "z"]], csv[["x", "y", "z"]], atol=1e-3)
    item = manifest.items("training")[0].as_dict()
    loaded = LoadPicksd(classes=manifest.class_names)(item)
    np.testing.assert_allclose(loaded["points"], [[15, 20, 10], [5, 10, 30]], atol=1e-3)  # z, y, x voxels


def test_unknown_split_and_bad_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(bad)
    bad.write_text(json.dumps({"ndim": 3, "classes": [{"name": "a", "radius": 1}], "train": []}))
    with pytest.raises(ManifestError, match=r"unknown key\(s\) \['train'\]"):
        load_manifest(bad)


def test_labeled_counts_only_inside_the_boxes(make_manifest):
    rows = [("ribosome", 50, 50, 50), ("ribosome", 150, 50, 50), ("ribosome", 450, 50, 50), ("ferritin", 120, 80, 30)]
    boxes = [[0, 0, 0, 200, 200, 200], [400, 0, 0, 500, 100, 100]]
    path = make_manifest(
        {"training": [("t1", rows, boxes), ("t2", [("ribosome", 300, 300, 200)], [[0, 0, 0, 100, 100, 100]]), ("t3", rows, None)]}
    )
    # t1: 3 ribosomes (2 in the first box, 1 in the second) + 1 ferritin; t2: its one ribosome is outside; t3: all
    assert load_manifest(path).labeled_counts("training") == [6, 2]


def test_a_run_refuses_tomograms_at_another_voxel_size(make_manifest, tmp_path):
    path = make_manifest({"training": [("TS_1", [("ribosome", 100.0, 200.0, 50.0)], None)], "test": [("TS_2", None, None), ("TS_3", None, None)]})
    raw = json.loads(path.read_text())
    raw["test"][0]["voxel_size"] = 10.05  # within 1 %: the same voxel size
    path.write_text(json.dumps(raw))
    assert load_manifest(path).run_voxel_size() == 10.0
    raw["test"][1]["voxel_size"] = 20.0  # a tomogram binned twice more
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"item\(s\) 'TS_3' \(20 Å\) are not at the manifest's 10 Å per voxel"):
        load_manifest(path).run_voxel_size()
