"""An ignite handler that draws the picks of an evaluation run over a slab of one item, in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.utils import min_version, optional_import

from cryoet_monai.data.manifest import Manifest, load_manifest
from cryoet_monai.engines.distributed import is_main_process
from cryoet_monai.handlers.tensorboard import LazyTensorBoardHandler
from cryoet_monai.inference.thresholds import apply_thresholds, load_thresholds
from cryoet_monai.visualize import figure_to_rgb, item_picks, overlay_figure, slab_image

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")


class TensorBoardPicksOverlay(LazyTensorBoardHandler):
    """Writes an image of one item's picks, marked against the truth, to TensorBoard after each evaluation run.

    The image is :func:`cryoet_monai.visualize.overlay_figure` (what ``cryoet-monai view`` draws): a slab
    through the middle of the tomogram (or the micrograph) with true positives as solid circles, false
    positives dashed and missed particles as crosses, per class. The step is the evaluator's epoch, which
    ``ValidationHandler`` sets to the trainer's. Attach it after a
    :class:`~cryoet_monai.inference.thresholds.ThresholdTuner` whose thresholds it applies. It keeps the
    image slab and the picks of its item as the run goes, so under ``torch.distributed`` it draws
    from rank 0's own items and never waits for the other ranks.

    Args:
        manifest: the manifest (path or loaded) with the truth, the class radii and the voxel size.
        summary_writer: a ``SummaryWriter``; default a new one writing to ``log_dir``, opened at the first
            image (on rank 0 only under ``torch.distributed``).
        log_dir: TensorBoard folder of the default writer.
        item_index: which item of the run (in loader order) to draw.
        thresholds_path: per-class thresholds JSON applied to the picks before drawing (the one the
            ``ThresholdTuner`` writes); None, or a missing file, draws every pick.
        thickness: slab thickness in voxels.
        dpi: resolution of the figure.
        tag: TensorBoard tag; the item id is appended.
        image_key: key of the image in the evaluator's batch items.
        id_key: key of the item id.
        picks_key: key of the picks table in the evaluator's output items.
    """

    def __init__(
        self,
        manifest: str | Path | Manifest,
        summary_writer=None,
        log_dir: str = "./runs",
        item_index: int = 0,
        thresholds_path: str | Path | None = None,
        thickness: int = 5,
        dpi: int = 60,
        tag: str = "picks",
        image_key: str = "image",
        id_key: str = "id",
        picks_key: str = "pred_picks",
    ):
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.manifest = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
        self.item_index = item_index
        self.thresholds_path = thresholds_path
        self.thickness = thickness
        self.dpi = dpi
        self.tag = tag
        self.image_key = image_key
        self.id_key = id_key
        self.picks_key = picks_key
        self._seen = 0
        self._item: tuple[str, np.ndarray, int | None, pd.DataFrame] | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine=None) -> None:
        self._seen, self._item = 0, None

    def collect(self, engine) -> None:
        """Keep the slab (not the whole volume) and the picks of the ``item_index``-th item."""
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item, out in zip(batch, outputs):
            if self._seen == self.item_index:
                volume = torch.as_tensor(item[self.image_key]).detach().cpu().float().numpy()[0]
                image, z = slab_image(volume, None, self.thickness)
                self._item = (str(item[self.id_key]), image, z if volume.ndim == 3 else None, out[self.picks_key])
            self._seen += 1

    def __call__(self, engine) -> None:
        if self._item is None or not is_main_process():
            return
        item_id, image, z, picks = self._item
        ndim = self.manifest.ndim
        if self.thresholds_path is not None and Path(self.thresholds_path).is_file():
            picks = apply_thresholds(picks, dict(zip(self.manifest.class_names, load_thresholds(self.thresholds_path, self.manifest.class_names))))
        item = self.manifest.item(item_id)
        truth = item_picks(self.manifest.read_item_picks(item), item_id, ndim) if item.picks is not None else None
        figure = overlay_figure(
            image,
            picks,
            z,
            voxel_size=item.voxel_size if ndim == 3 else 1.0,
            radii={c.name: c.radius for c in self.manifest.classes},
            truth=truth,
            thickness=self.thickness,
            title=f"{item_id}, epoch {engine.state.epoch}",
            dpi=self.dpi,
        )
        self._writer.add_image(f"{self.tag}/{item_id}", figure_to_rgb(figure), engine.state.epoch, dataformats="HWC")
        self._writer.flush()
