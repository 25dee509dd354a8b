import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cryoet_monai.transforms.views import (
    NUM_VIEWS,
    RandWedgeViewd,
    WedgeView,
    WedgeViewd,
    invert_view_points,
    invert_view_volume,
    view_indices,
    view_points,
    view_volume,
)

SHAPES = [(5, 6, 7), (4, 9, 3), (3, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", range(NUM_VIEWS))
def test_volume_views_invert_exactly(shape, k):
    x = torch.randn(2, *shape)
    y = view_volume(x, k)
    assert isinstance(y, torch.Tensor)
    assert torch.equal(invert_view_volume(y, k), x)
    a = x.numpy()
    b = view_volume(a, k)
    assert isinstance(b, np.ndarray) and np.array_equal(b, y.numpy())
    assert np.array_equal(invert_view_volume(b, k), a)


@pytest.mark.parametrize("k", range(NUM_VIEWS))
def test_points_follow_the_volume(k):
    shape = (5, 6, 9)
    vol = torch.arange(np.prod(shape), dtype=torch.float32).reshape(shape)
    viewed = view_volume(vol, k)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    pts = np.stack([z.ravel(), y.ravel(), x.ravel()], axis=1)
    moved = view_points(pts, k, shape)
    idx = moved.astype(int)
    assert np.array_equal(viewed.numpy()[idx[:, 0], idx[:, 1], idx[:, 2]], vol.numpy().ravel())
    assert np.array_equal(invert_view_points(moved, k, shape), pts)
    fractional = torch.tensor([[1.25, 2.5, 7.75]])
    assert torch.allclose(invert_view_points(view_points(fractional, k, shape), k, shape), fractional)


def test_views_are_distinct_and_keep_z():
    shape = (4, 5, 5)
    vol = torch.randn(shape)
    viewed = [view_volume(vol, k) for k in range(NUM_VIEWS)]
    assert len({v.numpy().tobytes() for v in viewed}) == NUM_VIEWS
    assert torch.equal(viewed[0], vol)
    profile = vol.sum(dim=(1, 2))
    for k, v in enumerate(viewed):
        expected = profile.flip(0) if k >> 3 else profile
        assert torch.allclose(v.sum(dim=(1, 2)), expected, atol=1e-5)  # Z slices stay Z slices
    # hand-checked: k=2 is one rot90 over (y, x): (y, x) -> (X-1-x, y)
    assert np.array_equal(view_points(np.array([[0, 1, 3]]), 2, (4, 5, 6)), [[0, 2, 1]])


def test_bad_view_index():
    with pytest.raises(ValueError, match="view index"):
        view_volume(torch.zeros(2, 2, 2), 16)
    with pytest.raises(ValueError, match="last 3 dims"):
        view_volume(torch.zeros(2, 2), 1)


@pytest.mark.parametrize("views", [8, "0", [], [[0, 1]], [0, 16], [0.5]])
def test_bad_view_settings_name_the_problem(views):
    with pytest.raises(ValueError, match="view"):
        view_indices(views)


def test_micrograph_views():
    assert view_indices(range(8), count=8) == list(range(8))
    assert view_indices(np.array([0, 3])) == [0, 3]
    with pytest.raises(ValueError, match="8 views"):
        view_indices([0, 9], count=8)


def test_array_transform():
    x = torch.randn(1, 3, 4, 5)
    t = WedgeView(5)
    assert torch.equal(t(x), view_volume(x, 5))
    assert torch.equal(t.inverse(t(x)), x)


def _sample(shape=(3, 4, 7)):
    img = MetaTensor(torch.randn(1, *shape), affine=torch.diag(torch.tensor([10.0, 10.0, 10.0, 1.0])))
    lab = MetaTensor(torch.randn(2, *shape), affine=img.affine.clone())
    pts = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]], dtype=np.float32)
    return {"image": img, "heatmap": lab, "points": pts}


@pytest.mark.parametrize("k", [1, 2, 3, 11, 15])
def test_dict_view_moves_points_and_affine(k):
    d = _sample()
    out = WedgeViewd(["image", "heatmap"], k)(d)
    pts = out["points"].astype(int)
    for before, after in zip(d["points"].astype(int), pts):
        assert out["image"][0, after[0], after[1], after[2]] == d["image"][0, before[0], before[1], before[2]]
        # the world position of a voxel does not change with the view
        w_before = d["image"].affine.double() @ torch.tensor([*before, 1.0], dtype=torch.float64)
        w_after = out["image"].affine.double() @ torch.tensor([*after, 1.0], dtype=torch.float64)
        assert torch.allclose(w_before, w_after)


def test_rand_view_inverse_restores_dict():
    t = RandWedgeViewd(["image", "heatmap"], prob=1.0, views=[3, 11])
    t.set_random_state(0)
    for _ in range(4):
        d = _sample()
        out = t(d)
        assert t.k in (3, 11)
        assert out["image"].shape[1:] == (3, 7, 4)
        back = t.inverse(out)
        for key in ("image", "heatmap"):
            assert torch.equal(back[key].as_tensor(), d[key].as_tensor())
            assert torch.allclose(back[key].affine, d[key].affine)
            assert len(back[key].applied_operations) == 0
        assert np.array_equal(back["points"], d["points"])


def test_rand_view_skipped_is_identity_and_invertible():
    t = RandWedgeViewd("image", prob=0.0)
    d = _sample()
    out = t(d)
    assert torch.equal(out["image"], d["image"])
    assert torch.equal(t.inverse(out)["image"], d["image"])
