"""Contrastive pre-training: sliding sub-volumes, NT-Xent going down, encoder weights reaching the U-Net."""

import pytest
import torch

from cryoet_monai.engines.contrastive import ContrastiveNet, PairedContrastiveLoss, SlidingSubvolumeDataset, prepare_view_pair
from cryoet_monai.networks.segmentation import ENCODER_BLOCKS, UNetEncoder, load_pretrained_encoder, segmentation_unet

TINY = (4, 4, 8, 8, 16, 4)


def test_sliding_subvolumes_step_half_the_window_and_cover_everything():
    volume = torch.arange(40 * 48 * 64, dtype=torch.float32).reshape(1, 40, 48, 64)
    dataset = SlidingSubvolumeDataset([{"image": volume, "id": "t"}], roi_size=(16, 16, 32))
    # starts per axis: z 0,8,16,24 (24 = end-aligned) ; y 0,8,...,32 ; x 0,16,32
    assert len(dataset) == 4 * 5 * 3
    covered = torch.zeros_like(volume, dtype=torch.bool)
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["image"].shape == (1, 16, 16, 32) and item["id"] == "t"
        start = int(item["image"][0, 0, 0, 0])
        z, rest = divmod(start, 48 * 64)
        y, x = divmod(rest, 64)
        covered[:, z : z + 16, y : y + 16, x : x + 32] = True
    assert covered.all()
    with pytest.raises(ValueError, match="smaller than the window"):
        SlidingSubvolumeDataset([{"image": volume}], roi_size=(64, 16, 16))


def test_view_pair_batch_and_paired_loss():
    batch = {"image": torch.zeros(3, 1, 4, 4, 4), "image_2": torch.ones(3, 1, 4, 4, 4)}
    views, target = prepare_view_pair(batch)
    assert views.shape == (6, 1, 4, 4, 4) and target is None and views[3:].eq(1).all()
    loss = PairedContrastiveLoss(temperature=0.5)
    aligned = torch.eye(4).repeat(2, 1)
    shuffled = torch.cat([torch.eye(4), torch.eye(4).roll(1, dims=0)])
    assert loss(aligned) < loss(shuffled)


def test_nt_xent_decreases_on_a_tiny_run():
    torch.manual_seed(0)
    net = ContrastiveNet(segmentation_unet(1, features=TINY), projection_dim=16, hidden_dim=16)
    loss = PairedContrastiveLoss(temperature=0.2)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x = torch.randn(4, 1, 32, 32, 32)
    losses = []
    for _ in range(8):
        views = torch.cat([x + 0.3 * torch.randn_like(x), x + 0.3 * torch.randn_like(x)])
        value = loss(net(views))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(float(value))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:2]) / 2


def test_encoder_weights_load_into_a_fresh_unet(tmp_path):
    pretrained = ContrastiveNet(segmentation_unet(3, features=TINY))
    torch.save(pretrained.encoder.state_dict(), tmp_path / "encoder.pt")
    unet = segmentation_unet(3, features=TINY)
    decoder_before = unet.final_conv.weight.detach().clone()
    load_pretrained_encoder(unet, tmp_path / "encoder.pt")
    for name in ENCODER_BLOCKS:
        for a, b in zip(getattr(unet, name).parameters(), getattr(pretrained.encoder, name).parameters()):
            assert torch.equal(a, b)
    assert torch.equal(unet.final_conv.weight, decoder_before)
    assert UNetEncoder(unet)(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 16, 2, 2, 2)
    assert load_pretrained_encoder(unet, None) is unet
    with pytest.raises(FileNotFoundError, match="pretrain.yaml"):
        load_pretrained_encoder(unet, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not an encoder"):
        load_pretrained_encoder(segmentation_unet(3), tmp_path / "encoder.pt")
