"""The command line: evaluate output, friendly one-line errors, overlays, bundle-run argument parsing."""

import json

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoet_monai.cli import image_id, main, parse_overrides
from cryoet_monai.runner import root_cause
from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import write_mrc


# the classes of the SemiETPicker bundle's shipped model (CZII order, radii in Å)
SHIPPED_CLASSES = [("apo-ferritin", 60), ("beta-amylase", 65), ("beta-galactosidase", 90), ("ribosome", 150), ("thyroglobulin", 130), ("virus-like-particle", 135)]


def test_evaluate_json_and_table(make_manifest, tmp_path, capsys):
    manifest = make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100), ("ferritin", 300, 200, 100)], None)]})
    pred = write_picks(make_picks("TS_1", ["ribosome", "ribosome"], np.array([[105, 100, 100], [400, 400, 300]])), tmp_path / "pred.csv")
    assert main(["evaluate", "--manifest", str(manifest), "--split", "test", "--pred", str(pred), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classes"]["ribosome"] == {"tp": 1, "fp": 1, "fn": 0, "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "fbeta": pytest.approx(17 * 0.5 / (8 + 1))}
    assert result["classes"]["ferritin"]["fn"] == 1
    assert main(["evaluate", "--manifest", str(manifest), "--pred", str(pred)]) == 0
    assert "CZII score" in capsys.readouterr().out


def test_bad_input_is_one_clear_line(make_manifest, tmp_path, capsys):
    manifest = make_manifest({"test": [("TS_1", [("ribosome", 9999, 100, 100)], None)]})
    assert main(["evaluate", "--manifest", str(manifest), "--pred", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert "outside the image" in err and "Traceback" not in err
    (tmp_path / "mybundle" / "configs").mkdir(parents=True)
    (tmp_path / "mybundle" / "configs" / "inference.yaml").write_text("x: 1\n")
    assert main(["run", str(tmp_path / "mybundle"), "no-such-config"]) == 2
    assert "has no config 'no-such-config' (available: ['inference'])" in capsys.readouterr().err


def test_the_message_shown_is_the_outermost_one_below_monai_s_wrappers():
    def chain():
        try:
            try:
                raise KeyError("experiment")
            except KeyError as err:
                raise ValueError("picks.star: no 'rlnMicrographName' column; name their micrograph (--exemplars-micrograph ID)") from err
        except ValueError as err:
            try:
                raise RuntimeError("applying transform <Lambdad>") from err
            except RuntimeError as wrapped:
                raise RuntimeError("Failed to instantiate {'_target_': 'Dataset'}") from wrapped

    with pytest.raises(RuntimeError) as info:
        chain()
    assert str(root_cause(info.value)).endswith("(--exemplars-micrograph ID)")  # not the KeyError below it
    plain = ValueError("a.mrc: 1 voxel(s) are NaN or infinite")
    assert root_cause(plain) is plain


def test_view_writes_overlay_png(make_manifest, tmp_path):
    manifest = make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100)], None)]})
    pred = write_picks(make_picks("TS_1", "ribosome", np.array([[100, 110, 100]])), tmp_path / "pred.csv")
    out = tmp_path / "overlay.png"
    tomo = tmp_path / "tomograms" / "TS_1.mrc"
    assert main(["view", str(tomo), "--picks", str(pred), "--manifest", str(manifest), "--out", str(out), "--z", "10"]) == 0
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"


def test_view_finds_the_item_of_a_dotted_file_name(make_manifest, tmp_path):
    manifest = make_manifest({"test": [("grid1.sq2.ts3", [("ribosome", 100, 100, 100)], None)]})
    pred = write_picks(make_picks("grid1.sq2.ts3", "ribosome", np.array([[100, 110, 100]])), tmp_path / "pred.csv")
    tomo = tmp_path / "tomograms" / "grid1.sq2.ts3.mrc"
    assert main(["view", str(tomo), "--picks", str(pred), "--manifest", str(manifest), "--out", str(tmp_path / "o.png")]) == 0
    assert main(["view", str(tomo), "--picks", str(pred), "--out", str(tmp_path / "p.png")]) == 0  # id from the file name alone
    assert [image_id(p) for p in ("a/TS_1.ome.zarr", "b/x.nii.gz", "c/grid1.sq2.mic1.jpg")] == ["TS_1", "x", "grid1.sq2.mic1"]


def test_parse_overrides_keeps_paths_as_strings():
    got = parse_overrides(["--manifest", "1.json", "--epochs", "3", "--lr=1e-3", "--roi_size", "[32, 64, 64]", "--output_dir", "007"])
    assert got == {"manifest": "1.json", "epochs": 3, "lr": 1e-3, "roi_size": [32, 64, 64], "output_dir": "007"}
    assert parse_overrides(["--pretrained", "null", "--model_path", "None", "--name", "nullable"]) == {"pretrained": None, "model_path": None, "name": "nullable"}


def test_evaluate_reads_relion5_star_with_the_manifest_geometry(make_manifest, tmp_path, capsys):
    manifest = make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100)], None)]})
    pred = make_picks("TS_1", "ribosome", np.array([[110.0, 100, 100]]))
    star = write_picks(pred, tmp_path / "pred.star", voxel_size=10.0, shapes={"TS_1": (40, 50, 60)})
    assert main(["evaluate", "--manifest", str(manifest), "--pred", str(star), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"]["ribosome"]["tp"] == 1


def test_view_refuses_picks_of_another_tomogram(make_manifest, tmp_path, capsys):
    make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100)], None)]})
    pred = write_picks(make_picks("TS_9", "ribosome", np.array([[100, 110, 100]])), tmp_path / "pred.csv")
    tomo = tmp_path / "tomograms" / "TS_1.mrc"
    assert main(["view", str(tomo), "--picks", str(pred), "--out", str(tmp_path / "o.png")]) == 2
    assert "has no picks for 'TS_1'" in capsys.readouterr().err
    assert main(["view", str(tomo), "--picks", str(pred), "--id", "TS_9", "--out", str(tmp_path / "o.png")]) == 0


def test_a_config_file_inside_a_bundle_folder_runs_with_that_bundle_s_root(tmp_path):
    received = tmp_path / "received" / "mybundle"
    (received / "configs").mkdir(parents=True)
    config = received / "configs" / "show.yaml"
    config.write_text('imports: ["$import pathlib"]\nbundle_root: /installed/bundle\nout: x\nrun: ["$pathlib.Path(@out).write_text(str(@bundle_root))"]\n')
    out = tmp_path / "root.txt"
    assert main(["run", str(received), str(config), "--out", str(out)]) == 0
    assert out.read_text() == str(received.resolve())


def test_a_mistyped_setting_is_refused_with_the_closest_one(tmp_path, capsys):
    bundle = tmp_path / "mybundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "pick.yaml").write_text("threshold: 0.5\ntta_views: [0]\nnet: {depth: 2}\nrun: []\n")
    assert main(["run", str(bundle), "pick", "--treshold", "0.9", "--tta-views", "[0]"]) == 2
    err = capsys.readouterr().err
    assert "--treshold (did you mean --threshold?)" in err and "--tta-views (did you mean --tta_views?)" in err
    assert main(["run", str(bundle), "pick", "--threshold", "0.9", "--net#depth", "3", "--run_id", "run"]) == 0


def test_manifest_check_warns_of_a_header_voxel_size_and_evaluate_needs_truth(make_manifest, tmp_path, capsys):
    manifest = make_manifest({"test": [("TS_1", None, None)], "validation": [("TS_2", [("ribosome", 100, 100, 100)], None)]})
    write_mrc(tmp_path / "tomograms" / "TS_1.mrc", np.zeros((40, 50, 60), np.float32), 20.0)  # binned, manifest says 10 Å
    assert main(["manifest", "check", str(manifest)]) == 0
    err = capsys.readouterr().err
    assert "item 'TS_1': voxel size 10 Å in the manifest, 20 Å in the header" in err and "TS_2" not in err
    pred = write_picks(make_picks("TS_1", "ribosome", np.array([[100, 110, 100]])), tmp_path / "pred.csv")
    assert main(["evaluate", "--manifest", str(manifest), "--split", "test", "--pred", str(pred)]) == 2
    assert "the 'test' split has no picks files" in capsys.readouterr().err


def test_view_marks_hits_against_the_item_s_own_picks_whatever_its_split(make_manifest, tmp_path, capsys, monkeypatch):
    import cryoet_monai.visualize as visualize

    seen = {}

    def draw_overlay(volume, picks, out, voxel_size, radii, truth, *args, **kwargs):
        seen["truth"] = truth
        return out

    monkeypatch.setattr(visualize, "draw_overlay", draw_overlay)
    manifest = make_manifest({"training": [("TS_1", [("ribosome", 100, 100, 100)], None)]})
    pred = write_picks(make_picks("TS_1", "ribosome", np.array([[100, 110, 100]])), tmp_path / "pred.csv")
    tomo = tmp_path / "tomograms" / "TS_1.mrc"
    assert main(["view", str(tomo), "--picks", str(pred), "--manifest", str(manifest), "--out", str(tmp_path / "o.png")]) == 0
    assert len(seen["truth"]) == 1 and seen["truth"]["experiment"].tolist() == ["TS_1"]  # not the (empty) test split's


def test_picking_without_a_trained_model_says_it_uses_the_shipped_one(tmp_path, caplog):
    from cryoet_monai.bundles import trained_or_shipped_model

    with caplog.at_level("WARNING"):
        assert trained_or_shipped_model(tmp_path / "run", tmp_path / "bundle") == str(tmp_path / "bundle" / "models" / "model.pt")
    assert "no trained model in" in caplog.text and "shipped model" in caplog.text
    (tmp_path / "run" / "models").mkdir(parents=True)
    (tmp_path / "run" / "models" / "model.pt").write_bytes(b"")
    assert trained_or_shipped_model(tmp_path / "run", tmp_path / "bundle") == str(tmp_path / "run" / "models" / "model.pt")


def test_a_run_that_fails_on_an_image_shows_no_traceback(make_manifest, tmp_path, capfd):
    classes = [{"name": name, "radius": radius, "weight": 1} for name, radius in SHIPPED_CLASSES]
    manifest = make_manifest({"test": [("TS_1", None, None)]}, classes=classes, voxel_size=25.0)  # the shipped model's
    image = tmp_path / "tomograms" / "TS_1.mrc"
    volume = np.zeros((40, 50, 60), np.float32)
    volume[5, 5, 5] = np.nan
    write_mrc(image, volume, 25.0)  # the manifest's header check passes; the voxels fail when the run reads them
    command = ["run", "semietpicker", "inference", "--manifest", str(manifest), "--split", "test", "--output_dir", str(tmp_path / "out")]
    assert main(command) == 2
    captured = capfd.readouterr()
    assert "TS_1.mrc: 1 voxel(s) are NaN or infinite" in captured.err
    assert "Traceback" not in captured.out + captured.err  # MONAI's engine logged it whole before
    with pytest.raises(RuntimeError):
        main(["--debug", *command])


def test_picking_other_classes_with_the_shipped_model_names_the_model_and_why(make_manifest, tmp_path, capsys):
    manifest = make_manifest({"test": [("TS_1", None, None)]})  # 2 classes; the shipped model has 6
    assert main(["run", "semietpicker", "inference", "--manifest", str(manifest), "--split", "test", "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # said by the model's model_info.json before any weights load
    assert "semietpicker/models/model.pt was trained for the classes ['apo-ferritin', 'beta-amylase'" in err
    assert "this manifest declares ['ribosome', 'ferritin']" in err and "train on this manifest" in err


def test_cryomae_3d_refuses_a_tomogram_at_another_voxel_size(make_manifest, tmp_path, capsys):
    manifest = make_manifest({"training": [("TS_1", [("ribosome", 200.0, 200.0, 200.0), ("ribosome", 400.0, 300.0, 200.0)], None)], "test": [("TS_2", None, None)]})
    raw = json.loads(manifest.read_text())
    raw["test"][0]["voxel_size"] = 20.0  # its picks would be placed at 10 Å per voxel
    manifest.write_text(json.dumps(raw))
    assert main(["run", "cryomae", "pick_3d", "--manifest", str(manifest), "--split", "test", "--output_dir", str(tmp_path / "out")]) == 2
    assert "item(s) 'TS_2' (20 Å) are not at the manifest's 10 Å per voxel" in capsys.readouterr().err
    assert not (tmp_path / "out" / "picks.csv").exists()


def test_resuming_a_run_made_with_other_network_settings_says_how_to_start_afresh(make_manifest, tmp_path, capsys):
    rows = [("ribosome", 200.0, 200.0, 200.0), ("ferritin", 400.0, 300.0, 200.0)]
    manifest = make_manifest({"training": [("TS_1", rows, None)], "validation": [("TS_2", rows, None)]})
    run = ["run", "semietpicker", "train", "--manifest", str(manifest), "--output_dir", str(tmp_path / "out"), "--max_epochs", "1",
           "--epoch_length", "1", "--crop_size", "[16, 32, 32]", "--num_samples", "1", "--val_interval", "0", "--pretrained", "null"]
    assert main([*run, "--network_def#filters", "[4, 8, 16, 32]"]) == 0
    assert main([*run, "--max_epochs", "2", "--network_def#filters", "[8, 16, 32, 64]"]) == 2  # resumes the checkpoint above
    err = capsys.readouterr().err
    assert "checkpoint_epoch=1.pt: the weights do not fit the network this config builds" in err
    assert "earlier run in" in err and "new --output_dir, or --resume false" in err and "--model_path" not in err


def test_convert_writes_warp_input_and_reads_it_back(make_manifest, tmp_path, capsys):
    rows = [("ribosome", 200.0, 300.0, 150.0), ("ferritin", 410.0, 120.0, 90.0)]
    manifest = make_manifest({"test": [("TS_1", rows, None)]})
    picks = tmp_path / "picks" / "TS_1.csv"
    assert main(["convert", str(picks), str(tmp_path / "warp.star"), "--manifest", str(manifest), "--convention", "warp"]) == 0
    assert set(starfile.read(tmp_path / "warp.star")["rlnMicrographName"]) == {"TS_1.tomostar"}
    assert main(["convert", str(tmp_path / "warp.star"), str(tmp_path / "back.csv"), "--manifest", str(manifest)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "back.csv"), pd.read_csv(picks), check_exact=False, atol=1e-3)
    assert main(["convert", str(picks), str(tmp_path / "relion5.star")]) == 2  # pixels need the voxel size
    assert "give --manifest for the voxel sizes and shapes" in capsys.readouterr().err


def test_evaluate_reads_a_micrograph_star_file_numbering_the_manifest_classes(tmp_path, capsys):
    write_mrc(tmp_path / "mic_1.mrc", np.zeros((64, 64), np.float32), 1.5)
    write_picks(make_picks("mic_1", ["a", "b"], np.array([[10.0, 10.0], [40.0, 30.0]]), ndim=2), tmp_path / "truth.csv")
    classes = [{"name": "a", "radius": 8, "weight": 1}, {"name": "b", "radius": 8, "weight": 1}]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"name": "m", "ndim": 2, "classes": classes, "test": [{"id": "mic_1", "image": "mic_1.mrc", "picks": "truth.csv"}]}))
    pred = pd.DataFrame({"rlnMicrographName": ["Micrographs/mic_1.mrc"] * 2, "rlnCoordinateX": [40.5, 10.0], "rlnCoordinateY": [30.0, 11.0], "rlnClassNumber": [2, 1]})
    starfile.write({"particles": pred}, tmp_path / "pred.star")  # a class number, no class name: the manifest's order names it
    assert main(["evaluate", "--manifest", str(manifest), "--pred", str(tmp_path / "pred.star"), "--json"]) == 0
    classes = json.loads(capsys.readouterr().out)["classes"]
    assert classes["a"]["tp"] == 1 and classes["b"]["tp"] == 1 and classes["b"]["fp"] == 0


def test_null_on_the_command_line_switches_a_setting_off(tmp_path):
    """`--pretrained null` reaches the config as None (monai.bundle.run drops None keyword arguments, which would keep
    a non-null default)."""
    bundle = tmp_path / "mybundle"
    (bundle / "configs").mkdir(parents=True)
    config = bundle / "configs" / "train.yaml"
    config.write_text('imports: ["$import pathlib"]\npretrained: default.pt\nout: x\nrun: ["$pathlib.Path(@out).write_text(repr(@pretrained))"]\n')
    out = tmp_path / "pretrained.txt"
    assert main(["run", str(bundle), str(config), "--out", str(out), "--pretrained", "null"]) == 0
    assert out.read_text() == "None"
