"""MONAI-style transforms for cryo-ET particle picking."""

from cryoet_monai.transforms.contrast import MatchContrast, MatchContrastd
from cryoet_monai.transforms.dropblock import WedgeDropBlock, WedgeDropBlock3d, WedgeDropBlockd, wedge_elongation
from cryoet_monai.transforms.heatmap import (
    HeatmapToClassMap,
    HeatmapToClassMapd,
    PicksToHeatmap,
    PicksToHeatmapd,
    annotated_mask,
    class_sigmas,
    heatmap_class_map,
    render_heatmap,
)
from cryoet_monai.transforms.picks import LoadPicksd, data_voxel_size
from cryoet_monai.transforms.voxel_size import ResampleToVoxelSize, ResampleToVoxelSized, resampled_length
from cryoet_monai.transforms.views import (
    NUM_VIEWS,
    RandWedgeViewd,
    WedgeView,
    WedgeViewd,
    invert_view_points,
    invert_view_volume,
    view_points,
    view_volume,
)
