"""CryoMAE building blocks: exact rescaling of coordinates, the self-cross loss, dense similarity geometry."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from cryoet_monai.data.picks import make_picks, within_border
from cryoet_monai.inference.exemplar import (
    ExemplarSet,
    ExemplarSimilarityInferer,
    SimilarityToPicks,
    density_threshold,
    grid_to_pixels,
    min_error_threshold,
    otsu_threshold,
    select_exemplars,
    similarity_map,
    two_population_gain,
    valley_threshold,
)
from cryoet_monai.losses.self_cross import SelfCrossSimilarityLoss
from cryoet_monai.networks.mae import CryoMAE
from cryoet_monai.transforms.rescale import Rescale, Rescaled, rescale_factor, rescaled_shape, to_original, to_rescaled


def tiny_mae(img_size=(48, 48), spatial_dims=2, hidden=24):
    return CryoMAE(1, img_size, 16, hidden_size=hidden, mlp_dim=32, num_layers=1, num_heads=2, decoder_hidden_size=12,
                   decoder_mlp_dim=16, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=spatial_dims)


def test_rescale_maps_coordinates_back_exactly():
    rng = np.random.default_rng(0)
    in_shape, factor = (4096, 3710), 12 / 54
    out_shape = rescaled_shape(in_shape, factor)
    points = rng.uniform(-0.5, 3000, size=(100, 2))
    np.testing.assert_allclose(to_original(to_rescaled(points, in_shape, out_shape), in_shape, out_shape), points, atol=1e-9)
    # the image edges map onto the image edges (pixel-centre convention)
    edges = np.array([[-0.5, -0.5], [in_shape[1] - 0.5, in_shape[0] - 0.5]])
    np.testing.assert_allclose(to_rescaled(edges, in_shape, out_shape), [[-0.5, -0.5], [out_shape[1] - 0.5, out_shape[0] - 0.5]])


def test_rescale_moves_a_bright_spot_to_the_mapped_position():
    image = torch.zeros(1, 400, 300)
    yy, xx = torch.meshgrid(torch.arange(400.0), torch.arange(300.0), indexing="ij")
    x0, y0 = 123.0, 251.0
    image[0] = torch.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 6.0**2))
    d = Rescaled("image", factor=0.25)({"image": image})
    small = d["image"][0]
    assert d["image_original_shape"] == (400, 300) and d["image_rescaled_shape"] == tuple(small.shape) == (100, 75)
    w = small.clamp_min(0) ** 4
    gy, gx = torch.meshgrid(torch.arange(100.0), torch.arange(75.0), indexing="ij")
    centroid = np.array([[(w * gx).sum() / w.sum(), (w * gy).sum() / w.sum()]])
    back = to_original(centroid, (400, 300), (100, 75))[0]
    assert np.hypot(*(back - [x0, y0])) < 1.0


def test_rescale_factor_and_errors():
    assert rescale_factor(54, 12) == pytest.approx(12 / 54)
    assert rescale_factor(5, 12) == 1.0 and rescale_factor(5, 12, allow_upsampling=True) == pytest.approx(2.4)
    with pytest.raises(ValueError):
        rescale_factor(0, 12)
    with pytest.raises(ValueError):
        Rescale(1.0)(torch.zeros(4, 4))
    volume = Rescale(0.5)(torch.randn(1, 8, 16, 16))
    assert volume.shape == (1, 4, 8, 8)


def test_self_cross_loss_orders_similarities_after_a_few_steps():
    torch.manual_seed(0)
    # toy set: exemplars share a direction plus noise; unlabeled = 80 % background + 20 % hidden particles
    base = torch.randn(16)
    particles = base + 2.0 * torch.randn(40, 16)
    background = torch.randn(60, 16) * 2.0
    encoder = torch.nn.Linear(16, 8)
    exemplars, unlabeled = particles[:10], torch.cat([particles[10:25], background])
    loss_fn = SelfCrossSimilarityLoss(class_prior=0.2, temperature=0.2)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.05)

    def similarities():
        with torch.no_grad():
            e = torch.nn.functional.normalize(encoder(exemplars), dim=-1)
            u = torch.nn.functional.normalize(encoder(background), dim=-1)
            ee = (e @ e.T)[~torch.eye(len(e), dtype=bool)].mean()
            return float(ee), float((e @ u.T).mean())

    before = similarities()
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(encoder(exemplars), encoder(unlabeled))
        loss.backward()
        optimizer.step()
    ee, eu = similarities()
    assert ee > eu + 0.3
    assert ee - eu > before[0] - before[1]
    # the hidden particles in the unlabeled set stay closer to the exemplars than background does
    with torch.no_grad():
        proto = torch.nn.functional.normalize(encoder(exemplars).mean(0), dim=0)
        hidden = torch.nn.functional.normalize(encoder(particles[25:]), dim=-1) @ proto
        bg = torch.nn.functional.normalize(encoder(background), dim=-1) @ proto
    assert hidden.mean() > bg.mean()


def test_self_cross_loss_arguments():
    with pytest.raises(ValueError):
        SelfCrossSimilarityLoss(class_prior=1.0)
    with pytest.raises(ValueError):
        SelfCrossSimilarityLoss()(torch.randn(1, 4), torch.randn(3, 4))


def test_mae_encoder_grid_and_reconstruction_loss():
    net = tiny_mae()
    x = torch.randn(2, 1, 48, 48)
    assert net.encode(x).shape == (2, 24, 3, 3)
    assert torch.isfinite(net.reconstruction_loss(x))
    with pytest.raises(ValueError):
        net.encode(torch.randn(1, 1, 32, 32))
    net3d = tiny_mae((32, 32, 32), 3, hidden=24)
    assert net3d.encode(torch.randn(1, 1, 32, 32, 32)).shape == (1, 24, 2, 2, 2)


def test_reconstruction_warmup_trains_the_reconstruction_alone_first():
    from ignite.engine import Events

    from cryoet_monai.engines.mae import CryoMAETrainer

    torch.manual_seed(0)
    net = tiny_mae()
    image = torch.randn(1, 96, 96, generator=torch.Generator().manual_seed(0))
    exemplars = ExemplarSet(image, make_picks("m", "p", [[30.0, 30.0], [60.0, 40.0], [40.0, 70.0]], ndim=2), (96, 96), 48, 16)
    windows = [{"image": torch.randn(2, 1, 48, 48, generator=torch.Generator().manual_seed(i))} for i in range(5)]

    def trainer(warmup, epoch_length=5):
        return CryoMAETrainer(device="cpu", max_epochs=1, epoch_length=epoch_length, train_data_loader=windows, network=net,
                              optimizer=torch.optim.SGD(net.parameters(), lr=0.01), exemplars=exemplars,
                              self_cross_loss=SelfCrossSimilarityLoss(), unlabeled_tokens=8, reconstruction_warmup=warmup, decollate=False)

    engine, losses = trainer(3), []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["self_cross_loss"])))
    engine.run()
    assert losses[:3] == [0.0, 0.0, 0.0] and all(v > 0 for v in losses[3:]), losses
    with pytest.raises(ValueError, match="reconstruction_warmup \\(5\\) leaves none of the 5 iterations"):
        trainer(5)


def test_similarity_map_positions_follow_the_token_centres():
    """With a purely local encoder (no attention, no position embedding) a token's similarity to an
    exemplar cut at a point is exactly 1 at that point's grid position ``g · stride − 0.5``."""
    torch.manual_seed(0)
    net = CryoMAE(1, (48, 48), 16, hidden_size=24, mlp_dim=32, num_layers=0, num_heads=2, pos_embed_type="none",
                  decoder_hidden_size=12, decoder_mlp_dim=16, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=2).eval()
    image = torch.randn(1, 70, 90)
    point = make_picks("m", "p", [[35.5, 27.5]], ndim=2)  # x = 9 · 4 − 0.5, y = 7 · 4 − 0.5
    exemplars = ExemplarSet(image, pd.concat([point, point]), (70, 90), (48, 48), 16)
    sim = similarity_map(net, image, exemplars.embeddings(net)[:1], stride=4)
    assert sim.shape == (70 // 4 + 1, 90 // 4 + 1)
    assert not torch.isnan(sim).any()
    assert float(sim[7, 9]) == pytest.approx(1.0, abs=1e-5)
    assert float(sim.max()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(grid_to_pixels(np.array([7, 9]), 4), [27.5, 35.5])


def local_encoder(spatial_dims: int, window: int) -> CryoMAE:
    """A token sees only its own patch (no attention, no position embedding): exact positions in tests."""
    return CryoMAE(1, (window,) * spatial_dims, 16, hidden_size=24, mlp_dim=32, num_layers=0, num_heads=2, pos_embed_type="none",
                   decoder_hidden_size=12, decoder_mlp_dim=16, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=spatial_dims).eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_view_averaged_similarity_stays_on_the_grid(spatial_dims, caplog):
    """Every view, turned back, puts an exemplar's exact match (1.0) on the same grid position, also when the
    image size is not a multiple of the stride: the average over all views is still 1 there. The last view is logged."""
    caplog.set_level(logging.INFO, logger="cryoet_monai.inference.exemplar")
    torch.manual_seed(0)
    net = local_encoder(spatial_dims, 48)
    spatial = (70, 90) if spatial_dims == 2 else (38, 46, 42)
    image = torch.randn(1, *spatial)
    xyz = [35.5, 27.5] if spatial_dims == 2 else [27.5, 19.5, 11.5]  # grid (7, 9) / (3, 5, 7) at stride 4
    point = make_picks("m", "p", [xyz], ndim=spatial_dims)
    exemplars = ExemplarSet(image, pd.concat([point, point]), spatial, 48, 16)
    views = list(range(8 if spatial_dims == 2 else 16))
    plain = ExemplarSimilarityInferer(exemplars, stride=4)(image[None], net)[0, 0]
    averaged = ExemplarSimilarityInferer(exemplars, stride=4, views=views)(image[None], net)[0, 0]
    index = (7, 9) if spatial_dims == 2 else (3, 5, 7)
    assert averaged.shape == plain.shape == tuple(n // 4 + 1 for n in spatial)
    assert float(plain[index]) == pytest.approx(1.0, abs=1e-5)
    assert float(averaged[index]) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(averaged, plain, atol=1e-3)  # the other views do change the map elsewhere
    assert f"view {len(views)}/{len(views)} done" in caplog.text
    with pytest.raises(ValueError, match="view"):
        ExemplarSimilarityInferer(exemplars, views=[len(views)])


def test_view_zero_is_plain_matching():
    """The far-end padding for the views never reaches a token of the unpadded grid, also with attention."""
    torch.manual_seed(0)
    net = tiny_mae().eval()
    image = torch.randn(1, 70, 90)
    exemplars = ExemplarSet(image, make_picks("m", "p", [[30.0, 30.0], [50.0, 40.0]], ndim=2), (70, 90), (48, 48), 16)
    plain = similarity_map(net, image, exemplars.embeddings(net), stride=4)
    assert torch.equal(ExemplarSimilarityInferer(exemplars, stride=4)(image[None], net)[0, 0], plain)


def test_min_error_threshold_finds_a_rare_population():
    """40 particles among 2000 broad background maxima (a tomogram's candidates): Otsu's cut falls inside the
    background; the minimum-error cut keeps the particles and drops nearly all the background."""
    rng = np.random.default_rng(0)
    background, particles = rng.normal(0.3, 0.15, 2000), rng.normal(0.85, 0.03, 40)
    scores = np.concatenate([background, particles])
    cut = min_error_threshold(scores)
    assert (particles >= cut).mean() >= 0.9 and (background >= cut).mean() <= 0.01
    assert density_threshold(scores, "min_error") == cut
    assert otsu_threshold(scores) < 0.5
    assert min_error_threshold(np.ones(5)) == 1.0


def test_picking_warns_when_the_candidates_form_one_population(caplog):
    """Peaks of pure noise are one population (a class the exemplars do not single out): picking still returns
    its cut but warns; 25 planted strong matches make a second population and no warning."""
    rng = np.random.default_rng(0)
    assert two_population_gain(rng.normal(0, 1, 2000)) < 0.01
    assert two_population_gain(np.concatenate([rng.normal(0.3, 0.15, 2000), rng.normal(0.85, 0.03, 40)])) > 0.04
    noise = torch.as_tensor(rng.normal(0, 0.1, (80, 80)), dtype=torch.float32)
    to_picks = SimilarityToPicks("p", radius=4.0, stride=4)
    with caplog.at_level(logging.WARNING, logger="cryoet_monai.inference.exemplar"):
        assert len(to_picks(noise, "m", (320, 320), (320, 320))) > 0
    assert "no second population" in caplog.text
    caplog.clear()
    planted = noise.clone()
    for y, x in rng.integers(5, 75, (25, 2)):
        planted[y - 1 : y + 2, x - 1 : x + 2] += 1.0
    with caplog.at_level(logging.WARNING, logger="cryoet_monai.inference.exemplar"):
        to_picks(planted, "m", (320, 320), (320, 320))
    assert "no second population" not in caplog.text


def test_density_thresholds_split_two_populations():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.2, 0.05, 400), rng.normal(0.7, 0.05, 100)])
    for t in (otsu_threshold(scores), valley_threshold(scores)):
        assert 0.35 < t < 0.6
    assert density_threshold(scores, 0.5) == 0.5
    with pytest.raises(ValueError):
        density_threshold(scores, "kmeans")


def test_similarity_to_picks_returns_original_pixels():
    sim = torch.zeros(26, 26)
    sim[10, 5] = 1.0  # grid (y=10, x=5) → rescaled pixel (x, y) = (19.5, 39.5)
    sim[20, 20] = 0.9
    picks = SimilarityToPicks("p", radius=20, stride=4, threshold=0.5)(sim, "m", (400, 400), (100, 100))
    expected = to_original(np.array([[19.5, 39.5], [79.5, 79.5]]), (400, 400), (100, 100))
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), expected)
    assert list(picks["micrograph"]) == ["m", "m"]
    # a border of 100 px drops the pick at x ≈ 79.5 and keeps one in the middle
    sim[20, 20], sim[12, 12] = 0.0, 0.9
    bordered = SimilarityToPicks("p", radius=20, stride=4, threshold=0.5, border=100)(sim, "m", (400, 400), (100, 100))
    np.testing.assert_allclose(bordered[["x", "y"]].to_numpy(), to_original(np.array([[47.5, 47.5]]), (400, 400), (100, 100)))


def test_within_border_counts_the_margin_from_pixel_edges():
    # image 10 rows × 20 columns spans x ∈ [-0.5, 19.5], y ∈ [-0.5, 9.5]
    points = np.array([[-0.5, 4.0], [1.4, 4.0], [1.5, 4.0], [17.5, 4.0], [17.6, 4.0], [10.0, 1.5], [10.0, 7.6]])
    np.testing.assert_array_equal(within_border(points, (10, 20), 2.0), [False, False, True, True, False, True, False])
    assert within_border(points, (10, 20)).all()


def test_select_exemplars_is_reproducible_and_respects_the_margin():
    picks = make_picks("a", "p", np.stack([np.arange(50) * 10.0, np.arange(50) * 10.0], 1), ndim=2)
    one = select_exemplars(picks, "a", 15, seed=3, margin=40, image_shape=(500, 500))
    assert len(one) == 15 and one.equals(select_exemplars(picks, "a", 15, seed=3, margin=40, image_shape=(500, 500)))
    assert one["x"].between(40, 459).all()
    with pytest.raises(ValueError):
        select_exemplars(picks, "b", 3)


def test_select_exemplars_from_relion_star_files(tmp_path):
    import starfile

    from cryoet_monai.data.manifest import Item, Manifest, ParticleClass

    xy = {"rlnCoordinateX": [10.0, 20.0, 30.0], "rlnCoordinateY": [5.0, 6.0, 7.0]}
    named = tmp_path / "autopick.star"  # micrograph names, no class
    starfile.write({"particles": pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/mic.mrc"] * 3, **xy})}, named)
    manual = tmp_path / "manualpick.star"  # RELION manual picks: no micrograph, unset class numbers
    starfile.write(pd.DataFrame({**xy, "rlnClassNumber": [-999] * 3}), manual)
    one = Manifest("m", 2, 1.0, [ParticleClass("bgal", 27.0)], {"training": [Item("mic", tmp_path / "mic.mrc")]})

    for path, manifest in [(named, None), (manual, one)]:
        chosen = select_exemplars(path, "mic", 5, particle_type="bgal", manifest=manifest)
        assert chosen["micrograph"].tolist() == ["mic"] * 3 and chosen["particle_type"].tolist() == ["bgal"] * 3
        assert chosen["x"].tolist() == xy["rlnCoordinateX"]
    assert select_exemplars(manual, "mic", 5, manifest=one)["particle_type"].tolist() == ["bgal"] * 3  # the only class
    with pytest.raises(ValueError, match=r"manualpick\.star: the exemplars name no micrograph .* add a column rlnMicrographName naming the micrograph 'mic'"):
        select_exemplars(manual, "mic", 5, particle_type="bgal")
    two = Manifest("m", 2, 1.0, [ParticleClass("bgal", 27.0), ParticleClass("ice", 9.0)], {"training": [Item("mic", tmp_path / "mic.mrc"), Item("other", tmp_path / "other.mrc")]})
    with pytest.raises(ValueError, match=r"manualpick\.star: .*no micrograph .* and the manifest has 2 training items"):
        select_exemplars(manual, "mic", 5, particle_type="bgal", manifest=two)
    with pytest.raises(ValueError, match=r"autopick\.star: the exemplars name no class .* declares \['bgal', 'ice'\]; add a column cryoetParticleType"):
        select_exemplars(named, "mic", 5, manifest=two)


def test_select_exemplars_from_a_centred_star_file_of_a_tomogram(make_manifest, tmp_path):
    from cryoet_monai.data.manifest import load_manifest
    from cryoet_monai.data.picks import write_picks

    rows = [("ribosome", 100, 200, 150), ("ribosome", 300, 100, 50), ("ferritin", 200, 200, 200)]
    manifest = load_manifest(make_manifest({"training": [("TS_1", rows, None)]}))
    truth = manifest.truth("training")
    star = write_picks(truth, tmp_path / "exemplars.star", voxel_size=10.0, shapes=(40, 50, 60))  # centred Å
    chosen = select_exemplars(star, "TS_1", 5, particle_type="ribosome", manifest=manifest)
    np.testing.assert_allclose(chosen[["x", "y", "z"]], truth[["x", "y", "z"]].iloc[:2], atol=1e-3)


def test_refine_peaks_finds_the_sub_grid_maximum():
    from cryoet_monai.inference.exemplar import refine_peaks

    yy, xx = np.mgrid[0:20, 0:20]
    centre = (7.3, 11.8)
    sampled = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 2.0**2))
    refined = refine_peaks(sampled, np.array([[7, 12]]))
    np.testing.assert_allclose(refined[0], centre, atol=0.1)
    # a peak on the border stays where it is along that axis
    assert refine_peaks(sampled, np.array([[0, 12]]))[0, 0] == 0.0


def test_exemplar_jitter_changes_training_views_only():
    torch.manual_seed(0)
    net = tiny_mae().eval()
    image = torch.randn(1, 96, 96)
    picks = make_picks("m", "p", [[40.0, 40.0], [60.0, 50.0]], ndim=2)
    exemplars = ExemplarSet(image, picks, (96, 96), (48, 48), 16, jitter=3)
    with torch.no_grad():
        plain = exemplars.embeddings(net)
        assert torch.equal(plain, exemplars.embeddings(net))
        assert exemplars.embeddings(net, views=True).shape == plain.shape


def test_3d_similarity_and_picks_in_angstrom():
    """The 3D variant: a purely local encoder finds an exemplar's own position in a volume, reported in Å."""
    torch.manual_seed(0)
    net = CryoMAE(1, (32, 32, 32), 16, hidden_size=24, mlp_dim=32, num_layers=0, num_heads=2, pos_embed_type="none",
                  decoder_hidden_size=12, decoder_mlp_dim=16, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=3).eval()
    volume = torch.randn(1, 40, 48, 48)
    voxel = 10.0
    point = make_picks("t", "p", [[27.5 * voxel, 19.5 * voxel, 11.5 * voxel]], ndim=3)  # x = 7·4 − 0.5, y = 5·4 − 0.5, z = 3·4 − 0.5
    exemplars = ExemplarSet(volume, pd.concat([point, point]), (40, 48, 48), 32, 16, voxel_size=voxel)
    sim = similarity_map(net, volume, exemplars.embeddings(net)[:1], stride=4)
    assert sim.shape == (11, 13, 13) and float(sim[3, 5, 7]) == pytest.approx(1.0, abs=1e-5)
    picks = SimilarityToPicks("p", radius=6.0, stride=4, threshold=0.99, voxel_size=voxel)(sim, "t", (40, 48, 48), (40, 48, 48))
    assert len(picks) >= 1
    np.testing.assert_allclose(picks.iloc[0][["x", "y", "z"]].to_numpy(float), [275.0, 195.0, 115.0], atol=0.5 * voxel)
