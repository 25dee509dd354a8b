"""An ignite handler that shows what a masked autoencoder sees and rebuilds, in TensorBoard."""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import CommonKeys, min_version, optional_import

from cryoet_monai.engines.distributed import is_main_process, unwrap_model
from cryoet_monai.handlers.tensorboard import LazyTensorBoardHandler
from cryoet_monai.visualize import slab_image

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")


def unpatchify(patches: torch.Tensor, grid_size, patch_size, channels: int = 1) -> torch.Tensor:
    """Inverse of :meth:`cryoet_monai.networks.mae.CryoMAE.patchify`: ``(B, N, prod(patch) · C)`` → ``(B, C, *img_size)``."""
    b, dims = patches.shape[0], len(grid_size)
    x = patches.reshape(b, *grid_size, *patch_size, channels)
    order = [0, 2 * dims + 1]
    for i in range(dims):
        order += [1 + i, 1 + dims + i]
    return x.permute(*order).reshape(b, channels, *[g * p for g, p in zip(grid_size, patch_size)])


class TensorBoardReconstruction(LazyTensorBoardHandler):
    """Every ``interval`` epochs (or iterations), writes one training window of a masked autoencoder to
    TensorBoard as three panels side by side: input | masked input | reconstruction.

    The masked patches are drawn at the window's minimum. The reconstruction keeps the visible patches
    and fills the masked ones with the prediction; since the MAE loss compares each patch after
    normalising it to zero mean and unit variance, predicted patches are shown with the true patch's
    mean and standard deviation (the texture is the model's). Tomogram windows show their middle slice.
    The mask is drawn with a fixed ``seed``, so every image shows the same masked patches.

    Args:
        network: a :class:`~cryoet_monai.networks.mae.CryoMAE` (or one wrapped in ``DistributedDataParallel``).
        summary_writer: a ``SummaryWriter``; default a new one writing to ``log_dir``, opened at the first
            image (on rank 0 only under ``torch.distributed``).
        log_dir: TensorBoard folder of the default writer.
        interval: write every ``interval`` epochs (``epoch_level``) or iterations.
        epoch_level: count epochs (True) or iterations (False).
        index: which window of the batch: ``engine.state.output[index][image_key]`` of a decollated output
            (a list, as trainers give by default), ``engine.state.output[image_key][index]`` of a batch dict.
        seed: seed of the mask.
        tag: TensorBoard tag.
        image_key: key of the input windows in the engine's output.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        summary_writer=None,
        log_dir: str = "./runs",
        interval: int = 1,
        epoch_level: bool = True,
        index: int = 0,
        seed: int = 0,
        tag: str = "reconstruction",
        image_key: str = CommonKeys.IMAGE,
    ):
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.network = network
        self.interval = interval
        self.epoch_level = epoch_level
        self.index = index
        self.seed = seed
        self.tag = tag
        self.image_key = image_key

    def attach(self, engine) -> None:
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event(every=self.interval), self)

    def panels(self, window: torch.Tensor) -> np.ndarray:
        """``[y, 3 · x]`` image: input | masked | reconstruction of one ``(C, *img_size)`` window."""
        model = unwrap_model(self.network)
        x = window[None].float()
        was_training = model.training
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            pred, mask = model(x)
        model.train(was_training)
        target = model.patchify(x)
        mean, std = target.mean(dim=-1, keepdim=True), (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
        masked = mask.bool()[..., None]
        rebuilt = torch.where(masked, pred * std + mean, target)
        hidden = torch.where(masked, target.min(), target)
        views = [x] + [unpatchify(p, model.grid_size, model.patch_size, x.shape[1]) for p in (hidden, rebuilt)]
        slices = [slab_image(v[0, 0].cpu().numpy(), None, 1)[0] for v in views]
        lo, hi = np.percentile(slices[0], [1, 99])
        return np.concatenate([np.clip((s - lo) / max(hi - lo, 1e-6), 0, 1) for s in slices], axis=1)

    def __call__(self, engine) -> None:
        if not is_main_process():
            return
        output = engine.state.output
        if isinstance(output, list):  # decollated: one dict per window
            window = torch.as_tensor(output[self.index][self.image_key]).detach()
        else:
            window = torch.as_tensor(output[self.image_key])[self.index].detach()
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        self._writer.add_image(self.tag, self.panels(window), step, dataformats="HW")
        self._writer.flush()
