"""`manifest from-micrographs`: a few-shot CryoMAE manifest from micrographs and a picks file of exemplars."""

import json

import numpy as np
import pandas as pd
import pytest
import starfile
from PIL import Image

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.cli import main
from cryoet_monai.data.manifest import ManifestError, load_manifest
from cryoet_monai.data.micrographs import manifest_from_micrographs
from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import image_info
from cryoet_monai.data.synthetic_2d import synthesize_micrographs


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = synthesize_micrographs(tmp_path_factory.mktemp("mics"), num_micrographs=3, shape=(128, 128), radius=8, num_particles=10, seed=2)
    manifest = load_manifest(path)
    items = [it for split in ("training", "test") for it in manifest.items(split)]
    return manifest, {it.id: it.image for it in items}


def test_exemplar_micrograph_trains_and_the_rest_are_picked(synthetic, tmp_path):
    source, images = synthetic
    truth = source.truth("training")
    first = truth["micrograph"].iloc[0]
    star = write_picks(truth[truth["micrograph"] == first].head(6), tmp_path / "manualpick.star")  # as RELION users have them
    out = manifest_from_micrographs(sorted(images.values()), star, diameter_px=16, out=tmp_path / "work" / "manifest.json")
    manifest = load_manifest(out)
    assert manifest.ndim == 2 and [c.radius for c in manifest.classes] == [8.0] and manifest.contrast == "dark"
    assert manifest.voxel_size == pytest.approx(image_info(images[first])[1]) != 1.0  # pixel size from the MRC header
    assert [it.id for it in manifest.items("training")] == [first]
    assert sorted(it.id for it in manifest.items("test")) == sorted(set(images) - {first})
    assert all(it.picks is None for it in manifest.items("test"))
    assert all("voxel_size" not in entry for split in ("training", "test") for entry in json.loads(out.read_text())[split])  # one pixel size
    np.testing.assert_allclose(manifest.truth("training")[["x", "y"]].to_numpy(), truth[truth["micrograph"] == first].head(6)[["x", "y"]].to_numpy(), atol=1e-3)
    assert not json.loads(out.read_text())["training"][0]["picks"].startswith("/")  # relative: the folder can move

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir("cryomae") / "configs" / "pretrain.yaml"))
    parser.update({"manifest": str(out)})
    assert len(parser.get_parsed_content("exemplar_picks")) == 6  # what pre-training will pull together


def test_the_micrograph_with_most_exemplars_comes_first_and_the_cli_writes_it(synthetic, tmp_path, capsys):
    _, images = synthetic
    a, b, c = sorted(images)
    exemplars = write_picks(make_picks([a, b, b, b], "betagal", [[10, 10], [20, 20], [40, 40], [60, 60]]), tmp_path / "ex.csv")
    out = tmp_path / "manifest.json"
    folder = {path.parent for path in images.values()}
    assert len(folder) == 1  # the synthetic micrographs share a folder: pass the folder, as for thousands of files
    assert main(["manifest", "from-micrographs", str(folder.pop()), "--exemplars", str(exemplars), "--diameter-px", "12", "--out", str(out),
                 "--contrast", "bright"]) == 0
    manifest = load_manifest(out)
    assert manifest.contrast == "bright" and {it.contrast for it in manifest.items("test")} == {"bright"}
    assert [it.id for it in manifest.items("training")] == [b, a] and [it.id for it in manifest.items("test")] == [c]
    assert manifest.class_names == ["betagal"]


def test_a_relion_manual_pick_file_names_its_micrograph_and_class_on_the_command_line(synthetic, tmp_path):
    import pandas as pd
    import starfile

    _, images = synthetic
    first = sorted(images)[0]
    star = tmp_path / f"{first}_manualpick.star"  # RELION's per-micrograph file: coordinates only
    starfile.write({"": pd.DataFrame({"rlnCoordinateX": [12.0, 30.5, 70.0], "rlnCoordinateY": [20.0, 44.0, 90.25]})}, star)
    with pytest.raises(ManifestError, match="--exemplars-micrograph"):
        manifest_from_micrographs(list(images.values()), star, 16, tmp_path / "manifest.json")
    with pytest.raises(ManifestError, match="--particle"):
        manifest_from_micrographs(list(images.values()), star, 16, tmp_path / "manifest.json", exemplars_micrograph=first)
    out = manifest_from_micrographs(list(images.values()), star, 16, tmp_path / "manifest.json", particle="ribosome", exemplars_micrograph=first)
    truth = load_manifest(out).truth("training")
    assert set(truth["micrograph"]) == {first} and set(truth["particle_type"]) == {"ribosome"}
    np.testing.assert_allclose(truth[["x", "y"]].to_numpy(), [[12.0, 20.0], [30.5, 44.0], [70.0, 90.25]])


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown micrograph", "not among the micrographs given"),
        ("outside", "lie outside the image"),
        ("one exemplar", "needs at least 2"),
        ("two classes", "2 classes"),
    ],
)
def test_bad_exemplars_are_named_and_leave_nothing_behind(synthetic, tmp_path, case, message):
    _, images = synthetic
    first = sorted(images)[0]
    rows = {
        "unknown micrograph": make_picks(["elsewhere", "elsewhere"], "p", [[10, 10], [20, 20]]),
        "outside": make_picks([first, first], "p", [[10, 10], [500, 20]]),
        "one exemplar": make_picks([first], "p", [[10, 10]]),
        "two classes": make_picks([first, first], ["p", "q"], [[10, 10], [20, 20]]),
    }[case]
    exemplars = write_picks(rows, tmp_path / "ex.csv")
    with pytest.raises(ManifestError, match=message):
        manifest_from_micrographs(list(images.values()), exemplars, 16, tmp_path / "out" / "manifest.json")
    assert not (tmp_path / "out" / "manifest.json").exists() and not list((tmp_path / "out").glob("picks/*.csv"))


def test_the_exemplar_file_is_never_overwritten(synthetic, tmp_path):
    _, images = synthetic
    first = sorted(images)[0]
    exemplars = write_picks(make_picks([first, first], "p", [[10, 10], [20, 20]]), tmp_path / "picks" / f"{first}.csv")
    before = exemplars.read_bytes()
    with pytest.raises(ManifestError, match="would overwrite"):
        manifest_from_micrographs(list(images.values()), exemplars, 16, tmp_path / "manifest.json")
    assert exemplars.read_bytes() == before and not (tmp_path / "manifest.json").exists()


def test_two_files_with_one_id_are_refused(synthetic, tmp_path):
    _, images = synthetic
    first = sorted(images.values())[0]
    copy = tmp_path / "copy" / first.name
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    with pytest.raises(ManifestError, match="the same id"):
        manifest_from_micrographs([first, copy], tmp_path / "unused.csv", 16, tmp_path / "manifest.json")


def test_refined_star_exemplars_are_recentred_with_the_header_pixel_size(synthetic, tmp_path):
    source, images = synthetic
    truth = source.truth("training")
    first = truth["micrograph"].iloc[0]
    rows = truth[truth["micrograph"] == first].head(4)
    pixel = image_info(images[first])[1]
    shift_px = np.array([[2.0, -1.0], [0.0, 3.0], [-4.0, 0.5], [1.0, 1.0]])
    star = tmp_path / "refined.star"  # coordinates of the old boxes, origin shifts in Å to the centres
    starfile.write({"particles": pd.DataFrame({
        "rlnMicrographName": [f"Extract/{first}.mrc"] * 4,
        "rlnCoordinateX": rows["x"].to_numpy() + shift_px[:, 0], "rlnCoordinateY": rows["y"].to_numpy() + shift_px[:, 1],
        "rlnOriginXAngst": shift_px[:, 0] * pixel, "rlnOriginYAngst": shift_px[:, 1] * pixel})}, star)
    out = manifest_from_micrographs(sorted(images.values()), star, diameter_px=16, particle="p", out=tmp_path / "work" / "manifest.json")
    np.testing.assert_allclose(load_manifest(out).truth("training")[["x", "y"]].to_numpy(), rows[["x", "y"]].to_numpy(), atol=1e-3)
    pngs = [tmp_path / f"{micrograph}.png" for micrograph in images]
    for png in pngs:
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(png)
    with pytest.raises(ManifestError, match="--pixel-size"):  # pictures carry no pixel size to convert Å shifts with
        manifest_from_micrographs(pngs, star, diameter_px=16, particle="p", out=tmp_path / "work2" / "manifest.json")


def test_micrographs_of_two_pixel_sizes_are_refused(synthetic, tmp_path):
    from cryoet_monai.data.readers import read_image, write_mrc

    source, images = synthetic
    truth = source.truth("training")
    first = truth["micrograph"].iloc[0]
    exemplars = write_picks(truth[truth["micrograph"] == first].head(4), tmp_path / "exemplars.csv")
    other = next(micrograph for micrograph in images if micrograph != first)
    binned = tmp_path / f"{other}.mrc"
    write_mrc(binned, read_image(images[other])[0], 2 * image_info(images[other])[1])  # written at twice the pixel size
    given = [images[first], binned]
    with pytest.raises(ManifestError, match=rf"{other}.mrc has .* Å per pixel, .*{first}.mrc .* make a manifest for each pixel size"):
        manifest_from_micrographs(given, exemplars, diameter_px=16, out=tmp_path / "work" / "manifest.json")


def test_a_csv_of_bare_positions_takes_its_micrograph_and_class_from_the_options(synthetic, tmp_path):
    source, images = synthetic
    truth = source.truth("training")
    first = truth["micrograph"].iloc[0]
    rows = truth[truth["micrograph"] == first].head(4)
    bare = tmp_path / "clicks.csv"
    rows[["x", "y"]].to_csv(bare, index=False)  # what a hand-picking session may leave
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['micrograph', 'particle_type'\].*--exemplars-micrograph ID"):
        manifest_from_micrographs(sorted(images.values()), bare, diameter_px=16, out=tmp_path / "a" / "manifest.json")
    out = manifest_from_micrographs(sorted(images.values()), bare, diameter_px=16, particle="bgal", exemplars_micrograph=first, out=tmp_path / "b" / "manifest.json")
    manifest = load_manifest(out)
    assert manifest.class_names == ["bgal"] and [it.id for it in manifest.items("training")] == [first]
    np.testing.assert_allclose(manifest.truth("training")[["x", "y"]].to_numpy(), rows[["x", "y"]].to_numpy(), atol=1e-3)


def test_an_undeclared_pixel_size_is_never_taken_as_1_angstrom(synthetic, tmp_path):
    """Pictures without --pixel-size: the manifest declares none, so a truth STAR file with Å origin shifts is refused
    (not shifted by the shift in Å read as pixels), unless the file's optics block gives the pixel size."""
    source, images = synthetic
    truth = source.truth("training")
    first = truth["micrograph"].iloc[0]
    rows = truth[truth["micrograph"] == first].head(4)
    for micrograph in images:
        Image.fromarray(np.zeros((128, 128), np.uint8)).save(tmp_path / f"{micrograph}.png")
    exemplars = write_picks(rows, tmp_path / "exemplars.csv")
    out = manifest_from_micrographs(sorted(tmp_path.glob("*.png")), exemplars, diameter_px=16, out=tmp_path / "work" / "manifest.json")
    raw = json.loads(out.read_text())
    assert "voxel_size" not in raw and not any("voxel_size" in it for split in ("training", "test") for it in raw[split])
    manifest = load_manifest(out)
    manifest.save(out)  # a round trip keeps it undeclared
    assert "voxel_size" not in json.loads(out.read_text())

    particles = pd.DataFrame({"rlnMicrographName": [f"{first}.png"] * 4, "rlnCoordinateX": rows["x"].to_numpy() + 2.0,
                              "rlnCoordinateY": rows["y"].to_numpy(), "rlnOriginXAngst": [3.0] * 4, "rlnOriginYAngst": [0.0] * 4,
                              "cryoetParticleType": ["particle"] * 4})
    star = tmp_path / "work" / "refined.star"
    starfile.write({"particles": particles}, star)
    raw["training"][0]["picks"] = "refined.star"
    out.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"item 'synth_000': .*refined.star: converting origin shifts in Å.*'voxel_size' in the manifest"):
        load_manifest(out)
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnMicrographPixelSize": [1.5]}),
                    "particles": particles.assign(rlnOpticsGroup=1)}, star)
    np.testing.assert_allclose(load_manifest(out).truth("training")[["x", "y"]].to_numpy(), rows[["x", "y"]].to_numpy(), atol=1e-3)
    raw["voxel_size"] = 1.5  # or the manifest declares it
    out.write_text(json.dumps(raw))
    starfile.write({"particles": particles}, star)
    np.testing.assert_allclose(load_manifest(out).truth("training")[["x", "y"]].to_numpy(), rows[["x", "y"]].to_numpy(), atol=1e-3)
