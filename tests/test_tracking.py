"""Training dashboards of the bundles on tiny data: TensorBoard scalars and images, and `--tracking mlflow`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from monai.bundle import run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.cli import main
from cryoet_monai.data.picks import make_picks, read_picks, write_picks
from cryoet_monai.data.readers import write_mrc
from cryoet_monai.data.synthetic_2d import synthesize_micrographs

SHAPE = (16, 32, 32)
SEMI = {"roi_size": [16, 32, 32], "network_def#filters": [4, 8, 16], "num_samples": 1, "batch_size": 1}
SCRATCH = {"pretrained": "$None"}  # random weights: the shipped generalist does not fit the small networks
SASI = {"roi_size": [16, 32, 32], "features": [4, 4, 8, 8, 16, 4], "num_samples": 1, "batch_size": 1, "use_pretrained": False}
MAE = {"window": 32, "network_def#hidden_size": 48, "network_def#mlp_dim": 96, "network_def#num_layers": 1,
       "network_def#decoder_num_layers": 1, "num_exemplars": 4, "batch_size": 2, "reconstruction_warmup": 2, "epoch_length": 4, "image_interval": 2}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Training, validation and unlabeled tomograms of 16 × 32 × 32 voxels with bright balls."""
    root = tmp_path_factory.mktemp("tomos")
    rng = np.random.default_rng(0)
    raw = {"name": "dash", "ndim": 3, "voxel_size": 10.0, "classes": [{"name": "ball", "radius": 40.0, "weight": 1}]}
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    for split in ("training", "validation"):
        centres = [(8, 8, 8), (8, 22, 22), (8, 8, 24)]
        volume = rng.normal(0, 0.3, SHAPE).astype(np.float32)
        for c in centres:
            volume[np.linalg.norm(grid - np.asarray(c), axis=-1) <= 4] += 1.5
        write_mrc(root / f"{split}.mrc", volume, 10.0)
        write_picks(make_picks(split, "ball", np.asarray(centres, float)[:, ::-1] * 10.0), root / f"{split}.csv")
        raw[split] = [{"id": split, "image": f"{split}.mrc", "picks": f"{split}.csv"}]
    raw["unlabeled"] = [{"id": "unlabeled", "image": "validation.mrc"}]
    (root / "manifest.json").write_text(json.dumps(raw))
    return root / "manifest.json"


@pytest.fixture(scope="module")
def micrographs(tmp_path_factory):
    return synthesize_micrographs(tmp_path_factory.mktemp("mics"), num_micrographs=1, shape=(96, 96), radius=8, num_particles=10, seed=0)


def tensorboard(log_dir) -> tuple[dict, dict]:
    """``{tag: [steps]}`` of the scalars and of the images in all event files of ``log_dir``."""
    scalars, images = {}, {}
    for path in sorted(log_dir.glob("events.*")):
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.step for e in events.Scalars(tag))
        for tag in events.Tags()["images"]:
            images.setdefault(tag, []).extend(e.step for e in events.Images(tag))
    return scalars, images


def mlflow_metrics(out) -> dict:
    """``{metric: [(step, value)]}`` of the single MLflow run stored in ``<out>/mlruns.db``."""
    mlflow = pytest.importorskip("mlflow")
    from monai.utils import path_to_sqlite_uri

    client = mlflow.MlflowClient(tracking_uri=path_to_sqlite_uri(out / "mlruns.db"))
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in runs[0].data.metrics}


@pytest.mark.parametrize("config, losses", [("train", ["train_loss"]), ("train_semi", ["train_loss", "supervised_loss", "unsupervised_loss"])])
def test_semietpicker_logs_losses_and_at_validation_its_score_and_an_overlay(manifest, tmp_path, config, losses):
    out = tmp_path / "out"
    run(config_file=str(bundle_dir("semietpicker") / "configs" / f"{config}.yaml"), manifest=str(manifest), output_dir=str(out),
        max_epochs=2, epoch_length=1, val_interval=1, unlabeled_batch_size=1, **SEMI, **SCRATCH)
    scalars, images = tensorboard(out / "tensorboard")
    assert all(scalars[name] == [1, 2] for name in losses), scalars
    assert scalars["score"] == [1, 2], "every validation logs its own score"
    assert images["picks/validation"] == [1, 2]


def test_sasi_validates_with_the_score_and_tracks_with_mlflow(manifest, tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "out"
    run(config_file=str(bundle_dir("sasi") / "configs" / "train.yaml"), manifest=str(manifest), output_dir=str(out),
        max_epochs=2, epoch_length=2, val_interval=2, tracking="mlflow", **SASI, **SCRATCH)
    metrics = mlflow_metrics(out)
    assert [step for step, _ in metrics["train_loss"]] == [1, 2, 3, 4]
    assert metrics["score"] == [(2, json.loads((out / "validation" / "metrics.json").read_text())["score"])]
    scalars, images = tensorboard(out / "tensorboard")
    assert scalars["score"] == [2] and images["picks/validation"] == [2]


def test_cli_run_tracks_semietpicker_with_mlflow_and_logs_the_config(manifest, tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "out"
    args = ["run", "semietpicker", "train", "--tracking", "mlflow", "--manifest", str(manifest), "--output_dir", str(out),
            "--max_epochs", "1", "--epoch_length", "2", "--val_interval", "1"]
    for key, value in SEMI.items():
        args += [f"--{key}", json.dumps(value)]
    assert main([*args, "--pretrained", "null"]) == 0
    metrics = mlflow_metrics(out)
    assert [step for step, _ in metrics["train_loss"]] == [1, 2] and [step for step, _ in metrics["score"]] == [1]
    assert list((out / "mlruns").rglob("config_*.json")), "the executed config is a run artifact"


def test_multi_gpu_validation_counts_each_tomogram_once_and_logs_from_rank_zero(manifest, tmp_path):
    out = tmp_path / "out"
    files = [str(bundle_dir("semietpicker") / "configs" / c) for c in ("train.yaml", "multi_gpu.yaml")]
    args = ["--manifest", str(manifest), "--output_dir", str(out), "--max_epochs", "1", "--epoch_length", "1", "--val_interval", "1", "--pretrained", "$None"]
    for key, value in SEMI.items():
        args += [f"--{key}", json.dumps(value)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file", str(files)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    picks = read_picks(out / "validation" / "picks.csv")
    assert len(picks) and not picks.duplicated().any(), "both ranks validated the one tomogram; its picks count once"
    scalars, images = tensorboard(out / "tensorboard")
    assert scalars["score"] == [1] and images["picks/validation"] == [1]
    writers = {path.name.rsplit(".", 2)[1] for path in (out / "tensorboard").glob("events.*")}  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert len(writers) == 1, "only rank 0 opens event files"


def test_cryomae_pretraining_writes_losses_and_reconstructions(micrographs, tmp_path):
    out = tmp_path / "out"
    run(config_file=str(bundle_dir("cryomae") / "configs" / "pretrain.yaml"), manifest=str(micrographs), output_dir=str(out), **MAE)
    scalars, images = tensorboard(out / "tensorboard")
    assert scalars["reconstruction_loss"] == [1, 2, 3, 4] and scalars["self_cross_loss"] == [1, 2, 3, 4]
    assert images["reconstruction"] == [2, 4]


def test_cryomae_pretraining_tracks_with_mlflow(micrographs, tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "out"
    run(config_file=str(bundle_dir("cryomae") / "configs" / "pretrain.yaml"), manifest=str(micrographs), output_dir=str(out),
        tracking="mlflow", **MAE)
    losses = mlflow_metrics(out)["train_loss"]
    assert [step for step, _ in losses] == [1, 2, 3, 4] and all(np.isfinite(v) and v > 0 for _, v in losses)
