"""Teacher–student pieces: ramp-up, EMA math, multi-view pseudo-labels, trainer run and resume."""

import math

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver, from_engine

from cryoet_monai.engines import MeanTeacherTrainer, MultiViewPseudoLabeler, ema_update, latest_checkpoint, sigmoid_rampup
from cryoet_monai.losses import HeatmapFocalLoss
from cryoet_monai.networks import HeatmapNet
from cryoet_monai.transforms.dropblock import WedgeDropBlock
from cryoet_monai.transforms.heatmap import render_heatmap

SHAPE = (8, 16, 16)  # divisible by 4: two down-samplings


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_ema_update_math():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, decay=0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)


def _blob(shape, centre):
    return render_heatmap([centre], [0], [1.5], shape, 1)[None]


def test_fusion_recovers_peak_seen_only_in_other_views():
    shape = (12, 20, 20)
    centre = (4.0, 6.0, 15.0)  # right half in x: the toy teacher below is blind there
    image = _blob(shape, centre)

    def half_blind_teacher(x):
        logits = 16 * x - 8
        logits[..., x.shape[-1] // 2 :] = -8  # sees only the left half of whatever view it is given
        return torch.cat([logits, torch.full_like(logits, -8)], 1)

    labeler = MultiViewPseudoLabeler([37.5, 37.5], voxel_size=25.0, thresholds=0.2, views=[0, 1])
    assert half_blind_teacher(image).max() < 0  # the plain frame misses it
    pseudo, trusted = labeler(half_blind_teacher, image)
    assert pseudo.shape == trusted.shape == (1, 2, *shape) and bool(trusted.all())
    peak = torch.nonzero(pseudo[0, 0] == pseudo[0, 0].max())[0].tolist()
    assert peak == [4, 6, 15] and pseudo[0, 0].max() == pytest.approx(1.0)
    assert pseudo[0, 1].max() == 0


def test_uncertain_voxels_are_left_out_of_the_pseudo_label_loss():
    shape = (12, 20, 20)
    confident = _blob(shape, (4.0, 6.0, 5.0))
    faint = 0.3 * _blob(shape, (8.0, 14.0, 14.0))  # probability 0.3 at its top: neither particle nor background

    def teacher(x):
        return torch.logit((confident + faint).clamp(1e-4, 1 - 1e-4)).expand_as(x)

    labeler = MultiViewPseudoLabeler([37.5], voxel_size=25.0, thresholds=0.5, views=[0], negative_threshold=0.1)
    pseudo, trusted = labeler(teacher, torch.zeros(1, 1, *shape))
    assert trusted[0, 0, 4, 6, 5] == 1 and pseudo[0, 0, 4, 6, 5] == pytest.approx(1.0)  # the pseudo-particle
    assert trusted[0, 0, 8, 14, 14] == 0 and pseudo[0, 0, 8, 14, 14] == 0  # the faint one: ignored, not background
    assert trusted[0, 0, 0, 19, 0] == 1  # far from both: trusted background
    per_class = MultiViewPseudoLabeler([37.5, 37.5], 25.0, thresholds=0.5, views=[0], negative_threshold=[0.1, 0.5])
    _, trusted = per_class(lambda x: torch.cat([teacher(x)] * 2, 1), torch.zeros(1, 1, *shape))
    assert trusted[0, 0, 8, 14, 14] == 0 and trusted[0, 1, 8, 14, 14] == 1  # 0.3 is below the second class's 0.5
    for bad in (1.5, [0.1, 0.2, 0.3]):
        with pytest.raises(ValueError, match="negative_threshold"):
            MultiViewPseudoLabeler([37.5, 37.5], 25.0, negative_threshold=bad)


def test_a_class_with_threshold_one_gets_no_pseudo_particles_but_keeps_its_background():
    shape = (12, 20, 20)
    blob = _blob(shape, (6.0, 10.0, 10.0))

    def teacher(x):
        return torch.logit(blob.clamp(1e-4, 1 - 1e-4)).expand(-1, 2, -1, -1, -1)  # both classes see the particle

    for negative in (None, 0.1):
        labeler = MultiViewPseudoLabeler([37.5, 37.5], 25.0, thresholds=[0.5, 1.0], views=[0], negative_threshold=negative)
        pseudo, trusted = labeler(teacher, torch.zeros(1, 1, *shape))
        assert pseudo[0, 0].max() == pytest.approx(1.0) and pseudo[0, 1].max() == 0
        assert bool(trusted[0, 1, 0, 0, 0])  # far from the particle: trusted background of the silent class too
        assert bool(trusted[0, 1, 6, 10, 10]) == (negative is None)  # at the particle only without negative_threshold
    silent, _ = MultiViewPseudoLabeler([37.5, 37.5], 25.0, thresholds=1.0, views=[0])(teacher, torch.zeros(1, 1, *shape))
    assert silent.shape == (1, 2, *shape) and silent.max() == 0
    faint = 0.6 * blob  # peak probability 0.6: a pseudo-particle at threshold 0.55, not at 0.75

    def faint_teacher(x):
        return torch.logit(faint.clamp(1e-4, 1 - 1e-4)).expand(-1, 2, -1, -1, -1)

    pseudo, _ = MultiViewPseudoLabeler([37.5, 37.5], 25.0, thresholds=[0.55, 0.75], views=[0])(faint_teacher, torch.zeros(1, 1, *shape))
    assert pseudo[0, 0].max() == pytest.approx(1.0) and pseudo[0, 1].max() == 0


def _loader(n, unlabeled=False):
    gen = torch.Generator().manual_seed(n)
    items = []
    for _ in range(n):
        image = torch.randn(1, 1, *SHAPE, generator=gen)
        if unlabeled:
            items.append({"image": image, "unlabeled_mask": torch.ones(1, 1, *SHAPE)})
        else:
            heatmap = render_heatmap([(4, 8, 8)], [0], [1.0, 1.0], SHAPE, 2)[None]
            items.append({"image": image, "label": torch.cat([heatmap, torch.ones(1, 1, *SHAPE)], 1)})
    return items


def _trainer(max_epochs, handlers=(), epoch_length=2, ema_warmup=True):
    torch.manual_seed(0)
    network = HeatmapNet(2, filters=(4, 4, 8))
    return MeanTeacherTrainer(
        device="cpu",
        max_epochs=max_epochs,
        epoch_length=epoch_length,
        train_data_loader=_loader(2),
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), 1e-2),
        loss_function=HeatmapFocalLoss(mask_channel=True),
        unlabeled_data_loader=_loader(3, unlabeled=True),
        pseudo_labeler=MultiViewPseudoLabeler([30.0, 30.0], 25.0, thresholds=0.3, views=[0, 1]),
        ema_decay=0.9,
        ema_warmup=ema_warmup,
        rampup_iterations=2,
        strong_transform=WedgeDropBlock(prob=1.0, block_size=2, num_blocks=2),
        train_handlers=list(handlers),
    )


def test_trainer_runs_and_teacher_follows_student():
    trainer = _trainer(max_epochs=2)
    initial = [p.clone() for p in trainer.teacher.parameters()]
    trainer.run()
    assert trainer.state.iteration == 4
    out = trainer.state.output
    for key in ("loss", "supervised_loss", "unsupervised_loss", "unsupervised_weight"):
        assert math.isfinite(float(from_engine([key], first=True)(out)))
    teacher, student = list(trainer.teacher.parameters()), list(trainer.network.parameters())
    assert any(not torch.equal(t, i) for t, i in zip(teacher, initial))
    assert any(not torch.equal(t, s) for t, s in zip(teacher, student))
    assert all(not p.requires_grad for p in teacher)


@pytest.mark.parametrize("ema_warmup, decay", [(True, 0.5), (False, 0.9)])
def test_teacher_decay_at_the_first_step_with_and_without_warmup(ema_warmup, decay):
    """Warm-up: the first step averages half and half; without it (burn-in) the teacher keeps 90 % of itself."""
    trainer = _trainer(max_epochs=1, epoch_length=1, ema_warmup=ema_warmup)
    initial = [p.clone() for p in trainer.teacher.parameters()]
    trainer.run()
    for t, i, s in zip(trainer.teacher.parameters(), initial, trainer.network.parameters()):
        assert torch.allclose(t, decay * i + (1 - decay) * s, atol=1e-6)


def test_resume_continues_iterations_and_restores_teacher(tmp_path):
    first = _trainer(max_epochs=1)
    state = {"model": first.network, "teacher": first.teacher, "optimizer": first.optimizer, "trainer": first}
    CheckpointSaver(str(tmp_path), state, save_interval=1, epoch_level=True, n_saved=1).attach(first)
    first.run()
    path = latest_checkpoint(tmp_path, "checkpoint_*.pt")
    assert path is not None

    second = _trainer(max_epochs=2)
    state = {"model": second.network, "teacher": second.teacher, "optimizer": second.optimizer, "trainer": second}
    iterations = []
    second.add_event_handler(Events.ITERATION_STARTED, lambda e: iterations.append(e.state.iteration))
    CheckpointLoader(path, state, map_location="cpu").attach(second)
    second.run()
    assert iterations == [3, 4] and second.state.iteration == 4
    assert latest_checkpoint(tmp_path / "missing") is None
