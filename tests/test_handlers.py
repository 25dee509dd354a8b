"""Ignite handlers on bare engines: the score of picks, pick overlays, MAE reconstructions and the model files."""

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cryoet_monai.handlers.picks_overlay as picks_overlay
import cryoet_monai.handlers.reconstruction as reconstruction
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import make_picks
from cryoet_monai.handlers import (
    BestModelSaver,
    CompletedCheckpointSaver,
    PicksScorer,
    TensorBoardPicksOverlay,
    TensorBoardReconstruction,
)
from cryoet_monai.handlers.reconstruction import unpatchify
from cryoet_monai.networks.mae import CryoMAE


class FakeWriter:
    """Stands in for a PicksWriter that collected ``picks``."""

    def __init__(self, picks):
        self.picks = picks

    def gathered(self):
        return self.picks, {}, {}


def images(log_dir) -> dict:
    """``{tag: [(step, width, height)]}`` of all event files in ``log_dir``."""
    found = {}
    for path in sorted(log_dir.glob("events.*")):
        events = EventAccumulator(str(path), size_guidance={"images": 0})
        events.Reload()
        for tag in events.Tags()["images"]:
            found.setdefault(tag, []).extend((e.step, e.width, e.height) for e in events.Images(tag))
    return found


def test_scorer_puts_the_score_into_the_metrics_before_later_handlers(make_manifest, tmp_path):
    manifest = make_manifest({"validation": [("TS_1", [("ribosome", 100, 100, 100), ("ferritin", 300, 200, 100)], None)]})
    picks = make_picks("TS_1", ["ribosome", "ribosome"], np.array([[105, 100, 100], [400, 400, 300]]))
    engine = Engine(lambda e, b: None)
    PicksScorer(FakeWriter(picks), manifest, "validation", metrics_path=tmp_path / "val" / "metrics.json").attach(engine)
    seen = {}
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.update(e.state.metrics))
    engine.run([0])
    written = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert seen["score"] == pytest.approx(written["score"]) and 0 < seen["score"] < 1
    assert written["classes"]["ribosome"]["tp"] == 1 and written["classes"]["ferritin"]["fn"] == 1
    assert seen["mean_f1"] == pytest.approx(written["mean_f1"])


def test_overlay_draws_the_chosen_item_with_thresholded_picks(make_manifest, tmp_path, monkeypatch):
    manifest = make_manifest({"validation": [("TS_1", [("ribosome", 100, 100, 100)], None), ("TS_2", [("ferritin", 300, 200, 200)], None)]})
    picks = make_picks(["TS_1", "TS_2", "TS_2"], ["ribosome", "ferritin", "ferritin"], np.array([[100, 100, 100], [300, 200, 200], [100, 400, 200]]), score=[0.9, 0.9, 0.2])
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"ribosome": 0.5, "ferritin": 0.5}))
    drawn = []
    real_figure = picks_overlay.overlay_figure
    monkeypatch.setattr(picks_overlay, "overlay_figure", lambda image, picks, z, **kw: drawn.append((image, picks, z, kw)) or real_figure(image, picks, z, **kw))
    batches = [[{"image": torch.randn(1, 40, 50, 60), "id": item_id}] for item_id in ("TS_1", "TS_2")]
    engine = Engine(lambda e, b: [{"pred_picks": picks[picks["experiment"] == b[0]["id"]]}])
    log_dir = tmp_path / "tb"
    handler = TensorBoardPicksOverlay(load_manifest(manifest), log_dir=str(log_dir), item_index=1, thresholds_path=thresholds)
    handler.attach(engine)
    engine.run(batches, max_epochs=2)
    image, drawn_picks, z, kw = drawn[-1]
    assert image.shape == (50, 60) and z == 20
    assert list(drawn_picks["score"]) == [0.9], "only TS_2's pick above its class threshold"
    assert list(kw["truth"]["particle_type"]) == ["ferritin"] and kw["radii"] == {"ribosome": 100, "ferritin": 60}
    steps = images(log_dir)["picks/TS_2"]
    assert [s[0] for s in steps] == [1, 2] and steps[0][1] > 300


def tiny_mae(dims: int, size: int) -> CryoMAE:
    return CryoMAE(in_channels=1, img_size=[size] * dims, patch_size=8, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2,
                   decoder_hidden_size=24, decoder_mlp_dim=48, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=dims)


def test_unpatchify_inverts_patchify():
    for dims, size in ((2, 32), (3, 16)):
        net = tiny_mae(dims, size)
        x = torch.randn(2, 1, *[size] * dims)
        assert torch.equal(unpatchify(net.patchify(x), net.grid_size, net.patch_size), x)


def test_reconstruction_panels_keep_visible_patches_and_are_written_every_interval(tmp_path):
    torch.manual_seed(0)
    net = tiny_mae(2, 32)
    handler = TensorBoardReconstruction(net, log_dir=str(tmp_path), interval=2, epoch_level=False, seed=3)
    window = torch.randn(1, 32, 32)
    panels = handler.panels(window)
    assert panels.shape == (32, 96) and panels.min() >= 0 and panels.max() <= 1
    source, masked, rebuilt = panels[:, :32], panels[:, 32:64], panels[:, 64:]
    visible = masked != masked.min()
    assert 0.15 < visible.mean() < 0.35, "75 % of the patches are masked"
    assert np.allclose(rebuilt[visible], source[visible], atol=1e-5) and np.allclose(masked[visible], source[visible], atol=1e-5)
    assert not np.allclose(rebuilt[~visible], source[~visible]), "masked patches come from the prediction"
    assert np.array_equal(handler.panels(window), panels), "the same mask every time"
    state = torch.random.get_rng_state()
    handler.panels(window)
    assert torch.equal(torch.random.get_rng_state(), state), "drawing the mask leaves training's random stream alone"
    engine = Engine(lambda e, b: {"image": torch.randn(2, 1, 32, 32)})
    handler.attach(engine)
    engine.run([0] * 5)
    assert [s[0] for s in images(tmp_path)["reconstruction"]] == [2, 4]


def test_reconstruction_reads_a_decollated_output(tmp_path):
    """Trainers decollate their output into one dict per window; ``index`` picks the window from either form."""
    handler = TensorBoardReconstruction(tiny_mae(2, 32), log_dir=str(tmp_path), index=1)
    windows = torch.randn(2, 1, 32, 32)
    seen = []
    handler.panels = lambda window: seen.append(window) or np.zeros((32, 96))
    for output in ({"image": windows}, [{"image": w} for w in windows]):
        engine = Engine(lambda e, b, output=output: output)
        handler.attach(engine)
        engine.run([0])
    assert len(seen) == 2 and all(torch.equal(w, windows[1]) for w in seen)


def test_reconstruction_of_a_tomogram_window_shows_its_middle_slice(tmp_path):
    handler = TensorBoardReconstruction(tiny_mae(3, 16), log_dir=str(tmp_path))
    window = torch.zeros(1, 16, 16, 16)
    window[:, 8] = torch.linspace(0, 1, 16)  # only the middle slice has structure
    source = handler.panels(window)[:, :16]
    assert source.shape == (16, 16) and np.allclose(source, source[0:1]) and source[0, -1] > source[0, 0]


def test_tensorboard_handlers_open_their_event_file_at_the_first_image_and_only_on_rank_zero(make_manifest, monkeypatch, tmp_path):
    manifest = load_manifest(make_manifest({"validation": [("TS_1", [("ribosome", 100, 100, 100)], None)]}))
    picks = make_picks("TS_1", "ribosome", np.array([[100.0, 100.0, 100.0]]), score=[0.9])

    def run_both(log_dir):
        handlers = [TensorBoardReconstruction(tiny_mae(2, 32), log_dir=str(log_dir), epoch_level=False),
                    TensorBoardPicksOverlay(manifest, log_dir=str(log_dir))]
        assert not log_dir.exists(), "no event file before anything is written"
        engines = [Engine(lambda e, b: {"image": torch.randn(1, 1, 32, 32)}), Engine(lambda e, b: [{"pred_picks": picks}])]
        for handler, engine in zip(handlers, engines):
            handler.attach(engine)
        engines[0].run([0])
        engines[1].run([[{"image": torch.randn(1, 40, 50, 60), "id": "TS_1"}]])
        for handler in handlers:
            handler.close()

    run_both(tmp_path / "rank0")
    assert {tag: [s[0] for s in steps] for tag, steps in images(tmp_path / "rank0").items()} == {"reconstruction": [1], "picks/TS_1": [1]}
    monkeypatch.setattr(reconstruction, "is_main_process", lambda: False)
    monkeypatch.setattr(picks_overlay, "is_main_process", lambda: False)
    run_both(tmp_path / "rank1")
    assert not (tmp_path / "rank1").exists(), "a rank other than 0 leaves no event file"


def _training(network, fail_at=None):
    """An engine that nudges ``network``'s weights every iteration and raises at iteration ``fail_at``."""

    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            for p in network.parameters():
                p.add_(1.0)

    return Engine(step)


@pytest.mark.parametrize("fail_at", [None, 3])
def test_final_model_is_written_only_when_training_completes(tmp_path, fail_at):
    network = torch.nn.Linear(2, 1)
    engine = _training(network, fail_at)
    CompletedCheckpointSaver(str(tmp_path), {"model": network}, save_final=True, final_filename="model.pt",
                             save_interval=1, epoch_level=False, n_saved=1).attach(engine)
    if fail_at is None:
        engine.run([0] * 4)
        assert torch.equal(torch.load(tmp_path / "model.pt")["weight"], network.weight)
    else:
        with pytest.raises(KeyboardInterrupt):
            engine.run([0] * 4)
        assert not (tmp_path / "model.pt").exists(), "an interrupted run must not leave a final model"
        assert list(tmp_path.glob("*_iteration=2.pt")), "the interval checkpoint to resume from stays"


def _validate(saver, network, score, epoch):
    engine = Engine(lambda e, b: None)

    def validated(e):  # as a MONAI evaluator run by ValidationHandler: the trainer's epoch, the score metric
        e.state.epoch = epoch
        e.state.metrics["score"] = score

    engine.add_event_handler(Events.EPOCH_COMPLETED, validated)
    saver.attach(engine)
    engine.run([0])
    return {k: v.clone() for k, v in network.state_dict().items()}


def test_best_model_keeps_the_best_validation_across_a_resume(tmp_path):
    network = torch.nn.Linear(2, 1)
    saver = BestModelSaver(tmp_path, network)
    weights = {}
    for epoch, score in [(1, 0.3), (2, 0.5), (3, 0.4)]:
        with torch.no_grad():
            network.weight.fill_(epoch)
        weights[epoch] = _validate(saver, network, score, epoch)
    saved = torch.load(tmp_path / "model_best.pt")
    assert torch.equal(saved["weight"], weights[2]["weight"])
    assert json.loads((tmp_path / "model_best.json").read_text()) == {"metric": "score", "value": 0.5, "epoch": 2}

    resumed = BestModelSaver(tmp_path, network)  # a new process after an interruption
    with torch.no_grad():
        network.weight.fill_(4)
    _validate(resumed, network, 0.45, 4)
    assert torch.equal(torch.load(tmp_path / "model_best.pt")["weight"], weights[2]["weight"]), "0.45 < 0.5 recorded before"
    _validate(resumed, network, 0.6, 5)
    assert torch.equal(torch.load(tmp_path / "model_best.pt")["weight"], network.weight)
    assert json.loads((tmp_path / "model_best.json").read_text())["epoch"] == 5


def test_best_model_names_a_missing_metric(tmp_path):
    engine = Engine(lambda e, b: None)
    BestModelSaver(tmp_path, torch.nn.Linear(2, 1), metric="score").attach(engine)
    with pytest.raises(KeyError, match="no metric 'score'"):
        engine.run([0])


def test_load_weights_names_a_file_that_does_not_fit(tmp_path):
    from cryoet_monai.handlers import load_weights

    path = tmp_path / "model.pt"
    torch.save(torch.nn.Conv3d(1, 6, 1).state_dict(), path)
    fitting = load_weights(torch.nn.Conv3d(1, 6, 1), path)
    assert torch.equal(fitting.weight, torch.load(path)["weight"])
    with pytest.raises(ValueError, match=r"model.pt: the weights do not fit .*size mismatch for weight.*\(--pretrained\)"):
        load_weights(torch.nn.Conv3d(1, 2, 1), path)


def test_model_info_refuses_weights_trained_for_other_classes_voxel_size_or_settings(tmp_path):
    from ignite.engine import Engine

    from cryoet_monai.handlers import ModelInfoWriter, ModelLoader, check_model_info, load_weights
    from cryoet_monai.handlers.model_info import trained_voxel_size

    folder = tmp_path / "models"
    engine = Engine(lambda e, b: None)
    ModelInfoWriter(folder, ["ribosome", "apo-ferritin"], 10.0).attach(engine)
    engine.run([0])  # training writes it when it starts
    weights = folder / "model.pt"
    torch.save(torch.nn.Conv3d(1, 2, 1).state_dict(), weights)

    check_model_info(weights, ["ribosome", "apo-ferritin"], 10.05)  # same classes, voxel size within 1 %
    assert trained_voxel_size(weights) == 10.0 and trained_voxel_size(tmp_path / "elsewhere" / "model.pt") is None
    check_model_info(tmp_path / "elsewhere" / "model.pt", ["x"], 99.0)  # weights without a description: not checked
    with pytest.raises(ValueError, match=r"trained for the classes \['ribosome', 'apo-ferritin'\].*declares \['apo-ferritin', 'ribosome'\]"):
        load_weights(torch.nn.Conv3d(1, 2, 1), weights, class_names=["apo-ferritin", "ribosome"])  # same shapes, swapped labels
    with pytest.raises(ValueError, match=r"trained at 10 Å per voxel .* works at 25 Å: add --target_voxel_size 10"):
        load_weights(torch.nn.Conv3d(1, 2, 1), weights, class_names=["ribosome", "apo-ferritin"], voxel_size=25.0)
    loader = Engine(lambda e, b: None)
    ModelLoader(load_path=str(weights), load_dict={"model": torch.nn.Conv3d(1, 2, 1)}, class_names=["a", "b"], voxel_size=10.0).attach(loader)
    with pytest.raises(ValueError, match="trained for the classes"):
        loader.run([0])
    ModelInfoWriter(folder, None, None, {"target_radius_px": 16, "lowpass_sigma_px": 1.0})()  # an encoder tied to scale only
    check_model_info(weights, ["any", "classes"], 99.0, {"target_radius_px": 16.0, "lowpass_sigma_px": 1.0, "stride": 8})
    assert trained_voxel_size(weights) is None
    with pytest.raises(ValueError, match=r"trained with lowpass_sigma_px 1 .* uses 0: add --lowpass_sigma_px 1"):
        load_weights(torch.nn.Conv3d(1, 2, 1), weights, settings={"target_radius_px": 16, "lowpass_sigma_px": 0})
    (folder / "model_info.json").write_text("{not json")
    with pytest.raises(ValueError, match="model_info.json: not a readable model description"):
        check_model_info(weights, ["ribosome", "apo-ferritin"], 10.0)
