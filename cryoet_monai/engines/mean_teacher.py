"""Teacher–student (mean teacher) training for heatmap detectors, as a MONAI ``SupervisedTrainer``.

Each iteration the student takes a supervised step on labeled crops and a pseudo-label step on
unlabeled crops: the EMA teacher labels the weakly augmented crop (fused over views, see
:class:`~cryoet_monai.engines.pseudo_labels.MultiViewPseudoLabeler`), the student sees a strongly
augmented version (a random view, mapped onto the pseudo-heatmap too, then e.g. a wedge-shaped
DropBlock). The unsupervised weight ramps up with a sigmoid schedule. Handlers (checkpoints, stats,
validation) work unchanged; save ``trainer.teacher`` beside the network to resume.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from cryoet_monai.transforms.views import NUM_VIEWS, view_volume


def sigmoid_rampup(iteration: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = iteration / length`` clipped to [0, 1] (Laine & Aila); 1 when length is 0."""
    if length <= 0:
        return 1.0
    t = min(max(iteration / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """``teacher = decay · teacher + (1 − decay) · student`` for parameters; buffers are copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def latest_checkpoint(directory: str | Path, pattern: str = "*.pt") -> str | None:
    """The most recently written checkpoint in ``directory`` matching ``pattern``, or None."""
    files = sorted(Path(directory).glob(pattern), key=lambda p: p.stat().st_mtime)
    return str(files[-1]) if files else None


def _cycle(loader: Iterable):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("no unlabeled data: add `unlabeled` items or `annotated` boxes to the training items")


class MeanTeacherTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` with an EMA teacher and a pseudo-label loss on unlabeled crops.

    Args:
        device: where the networks run.
        max_epochs: epochs over ``train_data_loader`` (the labeled crops).
        train_data_loader: labeled crops with ``image`` and ``label`` (heatmaps + mask channel).
        network: the student.
        optimizer: optimizer of the student.
        loss_function: supervised loss ``loss(pred, label)``.
        unlabeled_data_loader: unlabeled crops with ``image`` and ``unlabeled_mask``; cycled.
        pseudo_labeler: ``pseudo_labeler(teacher, images) -> (heatmaps, trusted)``, the mask ``trusted``
            weighting the pseudo-label loss per class and voxel (see ``MultiViewPseudoLabeler``).
        unsupervised_loss: ``loss(pred, target, mask)``; defaults to a masked heatmap focal loss.
        teacher: the teacher network; a copy of ``network`` when None.
        ema_decay: EMA decay of the teacher.
        ema_warmup: use ``min(ema_decay, 1 − 1/(iteration + 1))`` as the decay, so that a teacher that starts
            untrained follows the student closely at first; turn off when both start from trained weights
            (burn-in), so that the teacher keeps them instead of following the student's first noisy steps.
        unsupervised_weight: weight of the pseudo-label loss after the ramp-up.
        rampup_iterations: iterations of the sigmoid ramp-up of that weight.
        strong_transform: applied to each student image after its view (e.g. ``WedgeDropBlock``); None for none.
        student_views: view indices the student's random view is drawn from (one per batch).
        unlabeled_image_key: image key of the unlabeled batches.
        unlabeled_mask_key: key of the mask of unlabeled space.
        kwargs: any other ``SupervisedTrainer`` argument (inferer, prepare_batch, train_handlers, amp, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        unlabeled_data_loader: Iterable,
        pseudo_labeler: Callable,
        unsupervised_loss: Callable | None = None,
        teacher: torch.nn.Module | None = None,
        ema_decay: float = 0.99,
        ema_warmup: bool = True,
        unsupervised_weight: float = 1.0,
        rampup_iterations: int = 1000,
        strong_transform: Callable | None = None,
        student_views: Sequence[int] = tuple(range(NUM_VIEWS)),
        unlabeled_image_key: str = "image",
        unlabeled_mask_key: str = "unlabeled_mask",
        **kwargs,
    ):
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            **kwargs,
        )
        if unsupervised_loss is None:
            from cryoet_monai.losses.heatmap import HeatmapFocalLoss

            unsupervised_loss = HeatmapFocalLoss()
        self.teacher = copy.deepcopy(network) if teacher is None else teacher
        self.teacher.requires_grad_(False)
        self.unlabeled_data_loader = unlabeled_data_loader
        self.pseudo_labeler = pseudo_labeler
        self.unsupervised_loss = unsupervised_loss
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        self.unsupervised_weight = unsupervised_weight
        self.rampup_iterations = rampup_iterations
        self.strong_transform = strong_transform
        self.student_views = [int(k) for k in student_views]
        self.unlabeled_image_key = unlabeled_image_key
        self.unlabeled_mask_key = unlabeled_mask_key
        self._unlabeled = None

    def _next_unlabeled(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._unlabeled is None:
            self._unlabeled = _cycle(self.unlabeled_data_loader)
        batch = next(self._unlabeled)
        images = torch.as_tensor(batch[self.unlabeled_image_key]).to(self.state.device)
        masks = torch.as_tensor(batch[self.unlabeled_mask_key]).to(self.state.device)
        return images, masks

    def _strong_view(self, images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor):
        k = self.student_views[int(torch.randint(len(self.student_views), ()))]
        images, targets, masks = (view_volume(x, k) for x in (images, targets, masks))
        if self.strong_transform is not None:
            images = torch.stack([torch.as_tensor(self.strong_transform(img)) for img in images]).to(images)
        return images, targets, masks

    def _iteration(self, engine: MeanTeacherTrainer, batchdata: dict) -> dict:
        """One supervised + one pseudo-label step of the student, then the EMA update of the teacher."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        unlabeled, masks = engine._next_unlabeled()

        engine.teacher.eval()
        pseudo, trusted = engine.pseudo_labeler(engine.teacher, unlabeled)
        strong, pseudo, masks = engine._strong_view(unlabeled, pseudo, masks * trusted)
        weight = engine.unsupervised_weight * sigmoid_rampup(engine.state.iteration, engine.rampup_iterations)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.state.output[Keys.PRED] = engine.inferer(inputs, engine.network)
        strong_pred = engine.inferer(strong, engine.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        supervised = engine.loss_function(engine.state.output[Keys.PRED], targets).mean()
        unsupervised = engine.unsupervised_loss(strong_pred, pseudo, masks).mean()
        loss = supervised + weight * unsupervised
        engine.state.output.update(
            {
                Keys.LOSS: loss,
                "supervised_loss": supervised.detach(),
                "unsupervised_loss": unsupervised.detach(),
                "unsupervised_weight": torch.tensor(weight),
            }
        )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()

        decay = min(engine.ema_decay, 1.0 - 1.0 / (engine.state.iteration + 1)) if engine.ema_warmup else engine.ema_decay
        ema_update(engine.teacher, engine.network, decay)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
