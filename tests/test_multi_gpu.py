"""multi_gpu.yaml under torchrun: 2-process gloo (CPU) DDP training steps for the SemiETPicker, SaSi and CryoMAE bundles."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.picks import make_picks
from cryoet_monai.data.synthetic import synthesize
from cryoet_monai.data.synthetic_2d import synthesize_micrographs
from cryoet_monai.engines.distributed import distributed_model
from cryoet_monai.engines.mae import CryoMAETrainer
from cryoet_monai.inference.exemplar import ExemplarSet
from cryoet_monai.losses.self_cross import SelfCrossSimilarityLoss
from cryoet_monai.networks.mae import CryoMAE

SMALL = ["--roi_size", "[16, 32, 32]", "--max_epochs", "1", "--epoch_length", "2", "--num_samples", "1", "--batch_size", "1"]


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=0, progress=False)


def torchrun(bundle: str, configs: list[str], overrides: list[str], out):
    files = [str(bundle_dir(bundle) / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file", str(files)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd + overrides + ["--output_dir", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def event_file_writers(log_dir) -> set[str]:
    """Process ids in the names of the event files in ``log_dir`` (``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    return {path.name.rsplit(".", 2)[1] for path in log_dir.glob("events.*")}


def test_semietpicker_two_process_gloo_training(tiny_manifest, tmp_path):
    log = torchrun("semietpicker", ["train.yaml", "multi_gpu.yaml"], ["--manifest", str(tiny_manifest), *SMALL, "--network_def#filters", "[4, 8, 16]", "--pretrained", "$None"], tmp_path)
    assert "gloo" in log or "Epoch[1] Complete" in log
    final = tmp_path / "models" / "model.pt"
    assert final.is_file()
    state = torch.load(final, map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "the saved model must be the unwrapped network"
    assert len(list((tmp_path / "models").glob("checkpoint_*.pt"))) == 1, "only rank 0 writes checkpoints"
    assert len(event_file_writers(tmp_path / "tensorboard")) == 1, "only rank 0 opens event files"


def test_sasi_two_process_gloo_training(tiny_manifest, tmp_path):
    args = ["--manifest", str(tiny_manifest), *SMALL, "--use_pretrained", "False", "--pretrained", "$None"]
    torchrun("sasi", ["train.yaml", "multi_gpu.yaml"], args, tmp_path)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert [p.name for p in (tmp_path / "models").glob("checkpoint_*.pt")] == ["checkpoint_epoch=1.pt"], "rank 0 writes the epoch checkpoint"
    assert len(event_file_writers(tmp_path / "tensorboard")) == 1, "only rank 0 opens event files"
    log = torchrun("sasi", ["train.yaml", "multi_gpu.yaml"], [*args, "--max_epochs", "2"], tmp_path)
    assert "Epoch[2] Complete" in log and "Epoch[1] Complete" not in log, "a rerun resumes from the epoch-1 checkpoint"


@pytest.mark.parametrize("config", ["pretrain.yaml", "pretrain_3d.yaml"])
def test_cryomae_two_process_gloo_pretraining(config, tiny_manifest, tmp_path):
    if config == "pretrain.yaml":
        manifest = synthesize_micrographs(tmp_path / "data", num_micrographs=2, shape=(128, 128), radius=8, num_particles=12, seed=0)
    else:
        manifest = tiny_manifest
    tiny = ["--manifest", str(manifest), "--window", "48", "--network_def#hidden_size", "48", "--network_def#mlp_dim", "96", "--network_def#num_layers", "1",
            "--network_def#decoder_num_layers", "1", "--num_exemplars", "4", "--batch_size", "2", "--unlabeled_tokens", "16"]
    torchrun("cryomae", [config, "multi_gpu.yaml"], [*tiny, "--reconstruction_warmup", "1", "--epoch_length", "2"], tmp_path / "out")
    state = torch.load(tmp_path / "out" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "cls_token" in state and not any(k.startswith("module.") for k in state)
    assert len(event_file_writers(tmp_path / "out" / "tensorboard")) == 1, "only rank 0 opens event files"
    if config == "pretrain.yaml":  # every rank starts from --pretrained (at learning rate 0 the weights stay those)
        weights = tmp_path / "out" / "models" / "model.pt"
        again = [*tiny, "--pretrained", str(weights), "--self_cross_iterations", "1", "--learning_rate", "0"]
        torchrun("cryomae", [config, "multi_gpu.yaml"], again, tmp_path / "again")
        restarted = torch.load(tmp_path / "again" / "models" / "model.pt", map_location="cpu", weights_only=True)
        assert all(torch.equal(state[k], restarted[k]) for k in state)


def _cryomae_worker(rank: int, world_size: int, folder: str) -> None:
    """Two CryoMAE steps on rank-specific windows; saves this rank's parameters after training."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    torch.manual_seed(rank)  # different initial weights (DDP broadcasts rank 0's), masks and exemplar views per rank
    net = CryoMAE(in_channels=1, img_size=48, patch_size=16, hidden_size=32, mlp_dim=64, num_layers=1, num_heads=2,
                  decoder_hidden_size=16, decoder_mlp_dim=32, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=2)
    ddp = distributed_model(net, torch.device("cpu"), find_unused_parameters=True)
    image = torch.randn(1, 96, 96, generator=torch.Generator().manual_seed(0))
    exemplars = ExemplarSet(image, make_picks("m", "p", [[30.0, 30.0], [60.0, 40.0], [40.0, 70.0]], ndim=2), (96, 96), 48, 16, jitter=2)
    windows = torch.randn(2, 2, 1, 48, 48, generator=torch.Generator().manual_seed(100 + rank))  # each rank its own data
    trainer = CryoMAETrainer(device="cpu", max_epochs=1, epoch_length=2, train_data_loader=[{"image": w} for w in windows],
                             network=ddp, optimizer=torch.optim.SGD(ddp.parameters(), lr=0.5),
                             exemplars=exemplars, self_cross_loss=SelfCrossSimilarityLoss(), unlabeled_tokens=8)
    start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    trainer.run()
    torch.save({"start": start, "end": torch.nn.utils.parameters_to_vector(net.parameters()).detach()}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_cryomae_ddp_averages_both_losses(tmp_path):
    """Ranks see different windows: their weights stay equal only if the gradients of the DDP forward (reconstruction)
    AND of ``encode`` (self-cross similarity, run on the unwrapped module) are all-reduced."""
    mp.spawn(_cryomae_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(ranks[0]["start"], ranks[1]["start"]), "DDP broadcasts rank 0's initial weights"
    assert not torch.allclose(ranks[0]["start"], ranks[0]["end"]), "the steps must change the weights"
    torch.testing.assert_close(ranks[0]["end"], ranks[1]["end"], rtol=0, atol=1e-6)


def test_ranks_other_than_zero_drop_logging_and_checkpoints(monkeypatch, tmp_path):
    from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, TensorBoardImageHandler

    from cryoet_monai.engines import distributed

    net = torch.nn.Linear(2, 2)
    handlers = [StatsHandler(), TensorBoardImageHandler(log_dir=str(tmp_path)), CheckpointSaver(str(tmp_path), {"model": net}),
                LrScheduleHandler(torch.optim.lr_scheduler.StepLR(torch.optim.SGD(net.parameters(), lr=0.1), 1))]
    assert distributed.main_process_handlers(handlers) == handlers
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    assert distributed.main_process_handlers(handlers) == handlers[3:]
