"""CryoMAE pre-training as a MONAI ``SupervisedTrainer``: masked reconstruction + self-cross similarity.

Each iteration takes a batch of random windows of the training image (``image``) and the exemplar
windows of an :class:`~cryoet_monai.inference.exemplar.ExemplarSet`:

* reconstruction: the MAE loss of the random windows (75 % of patches masked, pixel MSE of the
  masked patches, :meth:`~cryoet_monai.networks.mae.CryoMAE.reconstruction_loss`);
* self-cross similarity: the unmasked encoder embeds the exemplar windows (each in a random flip /
  90° rotation; the exemplar token is the middle one) and ``unlabeled_tokens`` randomly chosen tokens
  of the random windows (unlabeled regions); :class:`~cryoet_monai.losses.self_cross.SelfCrossSimilarityLoss`
  pulls the former together and pushes the latter away from them, PU-weighted.

    loss = reconstruction + self_cross_weight · self_cross

The first ``reconstruction_warmup`` iterations train the reconstruction alone: on a micrograph the MAE only starts
to learn after one to two thousand iterations, and the self-cross term, which converges within about a hundred,
would otherwise shape an encoder that has learned nothing from the image yet.

Distributed training: ``network`` may be wrapped in ``DistributedDataParallel``. The masked forward
goes through the wrapper (that is what arms its gradient all-reduce); ``encode`` and the loss maths
run on the wrapped module. ``encode`` uses only parameters the masked forward uses too, and autograd
sums all contributions to a parameter before its gradient hook fires, so DDP averages the gradients
of both losses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from monai.engines import IterationEvents, SupervisedTrainer
from monai.utils import CommonKeys as Keys

from cryoet_monai.engines.distributed import unwrap_model
from cryoet_monai.inference.exemplar import ExemplarSet


class CryoMAETrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose iteration is one CryoMAE pre-training step.

    Args:
        device: where the network runs.
        max_epochs: epochs over ``train_data_loader``.
        train_data_loader: batches with ``image``: random windows ``(B, C, *img_size)`` of the training image.
        network: a :class:`~cryoet_monai.networks.mae.CryoMAE`, or one wrapped in ``DistributedDataParallel``.
        optimizer: its optimizer.
        exemplars: the exemplar windows.
        self_cross_loss: ``loss(exemplar_embeddings, unlabeled_embeddings)``.
        self_cross_weight: λ, the weight of the self-cross similarity loss.
        unlabeled_tokens: tokens of the random windows used as unlabeled embeddings per iteration.
        reconstruction_warmup: iterations of masked reconstruction alone before the self-cross term joins.
        kwargs: any other ``SupervisedTrainer`` argument (epoch_length, train_handlers, ...).

    Raises:
        ValueError: a self-cross weight with no iteration left after the warm-up.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        exemplars: ExemplarSet,
        self_cross_loss: Callable,
        self_cross_weight: float = 1.0,
        unlabeled_tokens: int = 256,
        reconstruction_warmup: int = 0,
        **kwargs,
    ):
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=self_cross_loss,
            **kwargs,
        )
        self.exemplars = exemplars
        self.self_cross_weight = float(self_cross_weight)
        self.unlabeled_tokens = int(unlabeled_tokens)
        self.reconstruction_warmup = int(reconstruction_warmup)
        total = self.state.epoch_length * max_epochs if self.state.epoch_length is not None else None
        if self.self_cross_weight > 0 and total is not None and self.reconstruction_warmup >= total:
            raise ValueError(
                f"reconstruction_warmup ({self.reconstruction_warmup}) leaves none of the {total} iterations for the self-cross "
                "term: raise epoch_length above it, lower reconstruction_warmup, or set self_cross_weight 0"
            )

    def _iteration(self, engine: CryoMAETrainer, batchdata: dict) -> dict | list:
        """One optimisation step on ``reconstruction + λ · self_cross`` (reconstruction alone during the warm-up).

        The output holds ``image``, ``loss``, ``reconstruction_loss`` and ``self_cross_loss``; like
        ``SupervisedTrainer`` it fires ``MODEL_COMPLETED``, so with ``decollate=True`` (the default) it
        becomes a list with one dict per window, every loss repeated in each.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs = torch.as_tensor(batchdata[Keys.IMAGE]).to(engine.state.device).float()
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        model = unwrap_model(engine.network)
        reconstruction = model.reconstruction_loss(inputs, engine.network(inputs))
        loss = reconstruction
        self_cross = torch.zeros(())
        if engine.self_cross_weight > 0 and engine.state.iteration > engine.reconstruction_warmup:
            exemplar_embeddings = engine.exemplars.embeddings(model, views=True)
            tokens = model.encode(inputs)
            tokens = tokens.flatten(2).transpose(1, 2).reshape(-1, tokens.shape[1])
            chosen = torch.randperm(len(tokens), device=tokens.device)[: engine.unlabeled_tokens]
            self_cross = engine.loss_function(exemplar_embeddings, tokens[chosen])
            loss = loss + engine.self_cross_weight * self_cross
        loss.backward()
        engine.optimizer.step()
        engine.state.output = {
            Keys.IMAGE: inputs,
            Keys.LOSS: loss.detach(),
            "reconstruction_loss": reconstruction.detach(),
            "self_cross_loss": self_cross.detach(),
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # decollates the output into one dict per window
        return engine.state.output
