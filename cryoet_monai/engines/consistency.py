"""Consistency guidance for MONAI's ``SupervisedTrainer``: an extra loss term added by a handler.

After the trainer computes its supervised loss (``IterationEvents.LOSS_COMPLETED``) the handler runs
the network on a random wedge-preserving view of the batch, and of a batch of unlabeled crops when
given, and adds ``weight · ViewConsistencyLoss`` before the backward pass. No trainer subclass needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.engines import IterationEvents
from monai.engines.utils import default_prepare_batch
from monai.utils import CommonKeys as Keys

from cryoet_monai.engines.mean_teacher import sigmoid_rampup
from cryoet_monai.losses.consistency import ViewConsistencyLoss
from cryoet_monai.transforms.views import NUM_VIEWS, view_volume


class ConsistencyGuidance:
    """Adds ``weight · consistency`` to a trainer's loss, on its labeled batch and optional unlabeled crops.

    The term is stored in ``engine.state.output["consistency"]`` for logging.

    Args:
        weight: weight of the consistency term.
        unlabeled_loader: a loader of unlabeled image crops (``{"image": ...}`` batches), cycled; None
            to use only the labeled batch.
        views: view indices drawn from (the identity is left out); default all non-identity views.
        loss: the consistency loss; default :class:`~cryoet_monai.losses.consistency.ViewConsistencyLoss`.
        rampup_iterations: the weight rises along a sigmoid ramp over this many iterations (0: at once).
        seed: seed of the view draws.
    """

    def __init__(
        self,
        weight: float = 1.0,
        unlabeled_loader: Iterable | None = None,
        views: Sequence[int] | None = None,
        loss: torch.nn.Module | None = None,
        rampup_iterations: int = 0,
        seed: int = 0,
    ) -> None:
        self.weight = float(weight)
        self.unlabeled_loader = unlabeled_loader
        self.views = [k for k in (range(NUM_VIEWS) if views is None else views) if k != 0]
        if not self.views:
            raise ValueError("views must hold at least one non-identity view")
        self.loss = ViewConsistencyLoss() if loss is None else loss
        self.rampup_iterations = int(rampup_iterations)
        self.rng = np.random.default_rng(seed)
        self._unlabeled = None

    def attach(self, engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def _next_unlabeled(self, device: torch.device) -> torch.Tensor:
        if self._unlabeled is None:
            self._unlabeled = iter(self.unlabeled_loader)
        try:
            batch = next(self._unlabeled)
        except StopIteration:
            self._unlabeled = iter(self.unlabeled_loader)
            batch = next(self._unlabeled)
        image, _ = default_prepare_batch(batch, device)
        return image

    def __call__(self, engine) -> None:
        k = int(self.rng.choice(self.views))
        output = engine.state.output
        terms = [self.loss(output[Keys.PRED], engine.inferer(view_volume(output[Keys.IMAGE], k), engine.network), k)]
        if self.unlabeled_loader is not None:
            image = self._next_unlabeled(output[Keys.IMAGE].device)
            pred = engine.inferer(image, engine.network)
            terms.append(self.loss(pred, engine.inferer(view_volume(image, k), engine.network), k))
        term = torch.stack(terms).mean()
        weight = self.weight * sigmoid_rampup(engine.state.iteration, self.rampup_iterations)
        output[Keys.LOSS] = output[Keys.LOSS] + weight * term
        output["consistency"] = term.detach()
