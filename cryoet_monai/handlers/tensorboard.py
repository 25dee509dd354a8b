"""A TensorBoard handler base whose default writer opens at the first write, so silent ranks leave no files."""

from __future__ import annotations

from monai.handlers.tensorboard_handlers import TensorBoardHandler
from monai.utils import optional_import

SummaryWriter, has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")


class LazyTensorBoardHandler(TensorBoardHandler):
    """MONAI ``TensorBoardHandler`` that creates its default ``SummaryWriter`` when ``_writer`` is first used.

    MONAI's base opens the writer (and an event file) at construction, so under ``torchrun`` every rank
    would leave an empty event file even when only rank 0 writes. Subclasses write through ``self._writer``
    on the main process only.

    Args:
        summary_writer: a ``SummaryWriter``; default a new one writing to ``log_dir``, opened at the first write.
        log_dir: TensorBoard folder of the default writer.

    Raises:
        RuntimeError: when ``summary_writer`` is None and the ``tensorboard`` package is not installed.
    """

    def __init__(self, summary_writer=None, log_dir: str = "./runs"):
        if summary_writer is None and not has_tensorboard:
            raise RuntimeError(f"{type(self).__name__} needs tensorboard: pip install tensorboard")
        self._summary_writer = summary_writer
        self.internal_writer = summary_writer is None
        self.log_dir = log_dir

    @property
    def _writer(self):
        if self._summary_writer is None:
            self._summary_writer = SummaryWriter(log_dir=self.log_dir)
        return self._summary_writer

    def close(self) -> None:
        """Close the default writer if it was opened."""
        if self.internal_writer and self._summary_writer is not None:
            self._summary_writer.close()
