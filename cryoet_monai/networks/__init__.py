"""Networks: factories over MONAI networks."""

from cryoet_monai.networks.heatmap_net import HeatmapNet
