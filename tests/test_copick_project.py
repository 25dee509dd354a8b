"""copick project → manifest, on a tiny project written with copick's own API (static) plus our overlay."""

import json

import numpy as np
import pandas as pd
import pytest

from cryoet_monai.data.copick_io import write_copick_overlay
from cryoet_monai.data.manifest import ManifestError, load_manifest
from cryoet_monai.data.picks import make_picks
from cryoet_monai.data.readers import read_image

copick = pytest.importorskip("copick")

VOXEL = 10.012
OBJECTS = [
    {"name": "ribosome", "is_particle": True, "label": 1, "radius": 150},
    {"name": "apo-ferritin", "is_particle": True, "label": 2, "radius": 60},
    {"name": "beta-amylase", "is_particle": True, "label": 3, "radius": 65},
    {"name": "membrane", "is_particle": False, "label": 4},
]
CURATED = {"ribosome": [[100.0, 50.0, 20.0], [200.0, 150.0, 80.0]], "apo-ferritin": [[10.0, 20.0, 30.0]]}


def _config(path, overlay, static=None):
    raw = {"config_type": "filesystem", "name": "tiny", "pickable_objects": OBJECTS,
           "overlay_root": f"local://{overlay}", "overlay_fs_args": {"auto_mkdir": True}}
    if static is not None:
        raw["static_root"] = f"local://{static}"
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Runs TS_1 (curated picks in static, 'net' picks in the overlay) and TS_2 (no picks), 16 x 24 x 32 voxels."""
    base = tmp_path_factory.mktemp("copick")
    static, overlay = base / "project" / "static", base / "project" / "overlay"
    writer = copick.from_file(str(_config(base / "writer.json", static)))
    volume = np.arange(16 * 24 * 32, dtype=np.float32).reshape(16, 24, 32)
    for name in ("TS_1", "TS_2"):
        writer.new_run(name).new_voxel_spacing(VOXEL).new_tomogram("wbp").from_numpy(volume, levels=2)
    for particle, points in CURATED.items():
        writer.get_run("TS_1").new_picks(particle, session_id="0", user_id="curation").from_numpy(np.array(points))
    write_copick_overlay(make_picks("TS_1", "ribosome", [[300.0, 230.0, 150.0]], 0.5), overlay, "net", "1")
    return base, _config(base / "copick.json", overlay, static)


def test_curated_picks_become_a_loadable_manifest(project):
    from cryoet_monai.data.copick_project import manifest_from_copick

    base, config = project
    path = manifest_from_copick(config, base / "manifest.json", user_id="curation")
    raw = json.loads(path.read_text())
    assert raw["training"][0]["image"] == "project/static/ExperimentRuns/TS_1/VoxelSpacing10.012/wbp.zarr"
    assert raw["training"][0]["picks"] == "picks/TS_1.csv"
    manifest = load_manifest(path)  # checks every image header (OME-Zarr) and that picks lie inside
    assert manifest.voxel_size == VOXEL and raw["contrast"] == "dark"  # as the CryoET Data Portal reconstructs
    assert [(c.name, c.radius, c.weight) for c in manifest.classes] == [
        ("ribosome", 150.0, 1.0), ("apo-ferritin", 60.0, 1.0), ("beta-amylase", 65.0, 0.0)]
    assert [it.id for it in manifest.items("training")] == ["TS_1"]
    assert [(it.id, it.picks) for it in manifest.items("unlabeled")] == [("TS_2", None)]
    truth = manifest.truth("training").sort_values(["particle_type", "x"], ignore_index=True)
    expected = pd.concat([make_picks("TS_1", p, xyz) for p, xyz in sorted(CURATED.items())], ignore_index=True)
    pd.testing.assert_frame_equal(truth, expected)
    image, voxel_size = read_image(manifest.item("TS_1").image)
    assert image.shape == (16, 24, 32) and voxel_size == pytest.approx(VOXEL) and image[1, 2, 3] == 24 * 32 + 2 * 32 + 3


def test_user_filter_splits_and_overrides(project):
    from cryoet_monai.data.copick_project import manifest_from_copick

    base, config = project
    path = manifest_from_copick(config, base / "net" / "m.json", user_id="net", session_id="1",
                                splits={"validation": ["TS_1"], "test": ["TS_2"]},
                                classes={"beta-amylase": {"weight": 1}, "ribosome": {"radius": 140}}, contrast="bright")
    manifest = load_manifest(path)
    assert manifest.contrast == "bright" and manifest.items("test")[0].contrast == "bright"
    assert manifest.particle_class("beta-amylase").weight == 1 and manifest.particle_class("ribosome").radius == 140
    truth = manifest.truth("validation")
    assert truth[["x", "y", "z", "score"]].values.tolist() == [[300.0, 230.0, 150.0, 0.5]]
    assert manifest.items("test")[0].picks is None and manifest.items("training") == []
    assert json.loads(path.read_text())["validation"][0]["image"].startswith(str(base))  # outside: absolute


def test_ambiguous_or_impossible_requests_are_refused(project):
    from cryoet_monai.data.copick_project import manifest_from_copick

    base, config = project
    with pytest.raises(ManifestError, match=r"several \(user, session\).*choose with `user_id`"):
        manifest_from_copick(config, base / "x" / "m.json")
    with pytest.raises(ManifestError, match="no 'denoised' tomogram at 10.012"):
        manifest_from_copick(config, base / "x" / "m.json", tomo_type="denoised", user_id="net")
    with pytest.raises(ManifestError, match=r"run\(s\) \['TS_9'\] not in the project"):
        manifest_from_copick(config, base / "x" / "m.json", splits={"training": ["TS_9"]})
    with pytest.raises(ManifestError, match="unknown split 'train'"):
        manifest_from_copick(config, base / "x" / "m.json", splits={"train": ["TS_1"]})
    with pytest.raises(ManifestError, match=r"override\(s\) \['membrane'\]"):
        manifest_from_copick(config, base / "x" / "m.json", classes={"membrane": {"radius": 5}})
    with pytest.raises(ManifestError, match="copick config not found"):
        manifest_from_copick(base / "absent.json", base / "x" / "m.json")
