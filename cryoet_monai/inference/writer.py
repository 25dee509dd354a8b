"""An ignite handler that gathers the picks of every tomogram and writes them when inference ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import

from cryoet_monai.data.picks import empty_picks, picks_ndim, write_picks

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

FORMATS = ("csv", "star", "copick", "relion")


class PicksWriter:
    """Collects the per-item picks tables of an evaluator and writes ``<output_dir>/picks.csv``.

    Each file is written atomically, so a reader never sees half a file. Under
    ``torch.distributed`` the tables of all ranks are gathered and rank 0 writes; an item picked on
    several ranks (every rank validating, or a ``DistributedSampler`` padding its last round with
    repeated items) counts once.

    Args:
        output_dir: folder of the output files.
        formats: any of ``"csv"`` (``picks.csv``, always written), ``"star"`` (``picks.star``, RELION 5
            centred Å), ``"copick"`` (a copick overlay under ``<output_dir>/copick``; tomograms only, rejected at
            the first micrograph, before anything is written) and ``"relion"`` (RELION picking output under
            ``<output_dir>/relion``: ``autopick.star`` and a coordinate file per micrograph, which RELION's Extract
            reads; micrographs only, see :func:`~cryoet_monai.data.relion_picking.write_relion_picking`).
        picks_key: key of the picks table in each decollated output item.
        image_key: key of the image, whose spatial shape RELION 5 coordinates need (the shape before rescaling
            where :class:`~cryoet_monai.transforms.rescale.Rescaled` recorded ``<image_key>_original_shape``).
        voxel_size_key: key of the voxel size in Å (``original_voxel_size`` wins where the tomogram was resampled:
            RELION coordinates refer to the tomogram file).
        id_key: key of the tomogram id.
        class_names: the manifest's classes in order; ``picks.star`` numbers them 1, 2, ... in ``rlnClassNumber``
            whichever of them were picked (default: the sorted names of the picked classes).
        micrographs: ``{id: micrograph file}`` for ``"relion"``, the names RELION knows the micrographs by.
        relion_project_dir: the RELION project folder that ``"relion"`` paths are relative to.
    """

    def __init__(
        self,
        output_dir: str | Path,
        formats: Sequence[str] = ("csv",),
        picks_key: str = "pred_picks",
        image_key: str = "image",
        voxel_size_key: str = "voxel_size",
        id_key: str = "id",
        class_names: Sequence[str] | None = None,
        micrographs: Mapping[str, str] | None = None,
        relion_project_dir: str | Path | None = None,
    ):
        unknown = set(formats) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown picks format(s) {sorted(unknown)}; choose from {list(FORMATS)}")
        self.output_dir = Path(output_dir)
        self.formats = list(formats)
        self.picks_key = picks_key
        self.image_key = image_key
        self.voxel_size_key = voxel_size_key
        self.id_key = id_key
        self.class_names = class_names
        self.micrographs = micrographs
        self.relion_project_dir = relion_project_dir
        self.tables: dict[str, pd.DataFrame] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.voxel_sizes: dict[str, float] = {}

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.tables, self.shapes, self.voxel_sizes = {}, {}, {}

    def collect(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item, out in zip(batch, outputs):
            experiment = str(item[self.id_key])
            ndim = picks_ndim(out[self.picks_key])
            if "copick" in self.formats and ndim == 2:
                raise ValueError(
                    f"{self.output_dir / 'copick'}: copick overlays are for tomograms and '{experiment}' is a micrograph; "
                    "leave 'copick' out of formats"
                )
            if "relion" in self.formats and ndim == 3:
                raise ValueError(
                    f"{self.output_dir / 'relion'}: RELION coordinate files are for micrographs and '{experiment}' is a "
                    "tomogram (its RELION picks are 'star'); leave 'relion' out of formats"
                )
            self.tables[experiment] = out[self.picks_key]
            shape = item.get(f"{self.image_key}_original_shape", item[self.image_key].shape[-ndim:])
            self.shapes[experiment] = tuple(int(s) for s in shape)
            voxel_size = item.get("original_voxel_size", item[self.voxel_size_key])  # the file's, if resampled
            self.voxel_sizes[experiment] = float(torch.as_tensor(voxel_size).reshape(-1)[0])

    def gathered(self) -> tuple[pd.DataFrame, dict, dict]:
        """All picks, image shapes and voxel sizes collected so far (of all ranks when distributed)."""
        parts = [(self.tables, self.shapes, self.voxel_sizes)]
        if dist.is_available() and dist.is_initialized():
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (self.tables, self.shapes, self.voxel_sizes))
        collected = list({k: t for p in parts for k, t in p[0].items()}.values())
        tables = [t for t in collected if len(t)]
        shapes = {k: v for p in parts for k, v in p[1].items()}
        voxel_sizes = {k: v for p in parts for k, v in p[2].items()}
        # no picks at all: an empty table of the items' kind (micrographs or tomograms)
        picks = pd.concat(tables, ignore_index=True) if tables else empty_picks(picks_ndim(collected[0]) if collected else 3)
        return picks, shapes, voxel_sizes

    def write(self, engine=None) -> None:
        picks, shapes, voxel_sizes = self.gathered()
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        write_picks(picks, self.output_dir / "picks.csv")
        if "star" in self.formats:
            star = self.output_dir / "picks.star"
            write_picks(picks, star, convention="relion5", voxel_size=voxel_sizes, shapes=shapes, class_names=self.class_names)
        if "copick" in self.formats:
            from cryoet_monai.data.copick_io import write_copick_overlay

            write_copick_overlay(picks, self.output_dir / "copick")
        if "relion" in self.formats:
            from cryoet_monai.data.relion_picking import write_relion_picking

            write_relion_picking(picks, self.output_dir / "relion", self.micrographs, self.relion_project_dir, self.class_names)
