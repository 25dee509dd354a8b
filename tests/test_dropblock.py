import math

import numpy as np
import pytest
import torch

from cryoet_monai.transforms.dropblock import WedgeDropBlock, WedgeDropBlock3d, WedgeDropBlockd, wedge_elongation


def test_elongation():
    assert math.isclose(wedge_elongation(60.0), 1.5518, abs_tol=1e-3)
    assert math.isclose(wedge_elongation(90.0), 1.0)  # full tilt range: no wedge
    assert wedge_elongation(45.0) > wedge_elongation(60.0)
    with pytest.raises(ValueError, match="tilt_max_deg"):
        wedge_elongation(0.0)


def _dropped_extent(mask):
    idx = np.argwhere(mask)
    return tuple(idx.max(0) - idx.min(0) + 1)


def test_block_extent_along_z():
    t = WedgeDropBlock(prob=1.0, block_size=6, num_blocks=1, fill="zero")
    t.set_random_state(3)
    out = t(np.ones((2, 20, 16, 16), dtype=np.float32))
    assert isinstance(out, np.ndarray)
    assert _dropped_extent(out[0] == 0) == (round(1.5518 * 6), 6, 6) == (9, 6, 6)
    assert np.array_equal(out[0] == 0, out[1] == 0)  # one block across channels


def test_local_noise_fill_matches_local_statistics():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.normal(5.0, 2.0, size=(1, 24, 24, 24)).astype(np.float32))
    img[:, :, :, 12:] += 10.0  # two intensity regions; blocks must follow their own
    t = WedgeDropBlock(prob=1.0, block_size=8, num_blocks=1)
    t.set_random_state(1)
    out = t(img)
    assert isinstance(out, torch.Tensor) and out.dtype == img.dtype
    (block,) = t.blocks
    before, after = img[(0, *block)], out[(0, *block)]
    assert after.abs().min() > 0  # noise, not zeros
    assert not torch.equal(before, after)
    assert math.isclose(after.mean().item(), before.mean().item(), abs_tol=0.3)
    assert math.isclose(after.std().item(), before.std().item(), rel_tol=0.1)
    outside = torch.ones_like(img, dtype=torch.bool)
    outside[(0, *block)] = False
    assert torch.equal(out[outside], img[outside])


def test_prob_zero_is_identity_and_dict_shares_blocks():
    img = torch.randn(1, 10, 10, 10)
    assert WedgeDropBlock(prob=0.0)(img) is img
    t = WedgeDropBlockd(["image", "other"], prob=1.0, block_size=4, num_blocks=2, fill="zero")
    t.set_random_state(7)
    d = t({"image": torch.ones(1, 12, 12, 12), "other": torch.ones(1, 12, 12, 12), "label": torch.ones(1, 12, 12, 12)})
    assert torch.equal(d["image"] == 0, d["other"] == 0) and (d["image"] == 0).any()
    assert torch.equal(d["label"], torch.ones(1, 12, 12, 12))


def test_feature_dropblock_eval_identity_and_train_fraction():
    torch.manual_seed(0)
    layer = WedgeDropBlock3d(drop_prob=0.2, block_size=3)
    x = torch.ones(4, 8, 12, 12, 12)
    layer.eval()
    assert layer(x) is x
    layer.train()
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.2) < 0.02
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1.0 / (1.0 - dropped)))  # rescaled: mean stays 1
    # dropped regions are whole Z-elongated blocks: a lone seed makes a (5, 3, 3) hole
    lone = WedgeDropBlock3d(drop_prob=2e-3, block_size=3).train()
    torch.manual_seed(1)
    for _ in range(50):
        z = lone(torch.ones(1, 1, 20, 20, 20))
        holes = (z[0, 0] == 0).numpy()
        if holes.sum() == 45:
            assert _dropped_extent(holes) == (5, 3, 3)
            break
    else:
        pytest.fail("no single block drawn")
