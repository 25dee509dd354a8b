"""Masked Dice+Focal, the view-consistency loss and its trainer handler."""

import torch
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys as Keys

from cryoet_monai.engines.consistency import ConsistencyGuidance
from cryoet_monai.losses.consistency import ViewConsistencyLoss
from cryoet_monai.losses.segmentation import MaskedDiceFocalLoss
from cryoet_monai.transforms.views import view_volume


def _target():
    target = torch.zeros(2, 2, 8, 8, 8)
    target[:, 0, 2:5, 2:5, 2:5] = 1
    target[:, 1, :, :, :6] = 1  # annotated where x < 6
    return target


def test_masked_loss_ignores_unannotated_voxels():
    loss = MaskedDiceFocalLoss()
    logits = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    loss(logits, _target()).backward()
    assert torch.all(logits.grad[..., 6:] == 0) and torch.any(logits.grad[..., :6] != 0)
    other = logits.detach().clone()
    other[..., 6:] = torch.randn_like(other[..., 6:]) * 10
    assert torch.allclose(loss(other, _target()), loss(logits.detach(), _target()))


def test_masked_loss_is_low_for_the_right_answer_and_weights_dice():
    target = _target()
    right = 10 * torch.cat([1 - target[:, :1], target[:, :1]], dim=1)
    assert MaskedDiceFocalLoss()(right, target) < 0.01
    assert MaskedDiceFocalLoss()(-right, target) > 15
    dice_only = MaskedDiceFocalLoss(lambda_dice=1, lambda_focal=0)(-right, target)
    assert 0.9 < float(dice_only) <= 1.0


def test_consistency_zero_for_an_equivariant_net_positive_otherwise():
    loss = ViewConsistencyLoss()
    x = torch.randn(1, 1, 6, 8, 8)
    pointwise = torch.nn.Conv3d(1, 3, 1)
    assert loss(pointwise(x), pointwise(view_volume(x, 5)), 5) < 1e-10
    ramp = torch.linspace(-3, 3, 8)

    def position_aware(v):  # not equivariant: adds a fixed ramp along x
        return torch.cat([v, v + ramp, v - ramp], dim=1)

    assert loss(position_aware(x), position_aware(view_volume(x, 1)), 1) > 1e-3


def test_detached_target_sends_gradient_only_through_the_viewed_prediction():
    pred = torch.randn(1, 3, 4, 6, 6, requires_grad=True)
    pred_of_view = torch.randn(1, 3, 4, 6, 6, requires_grad=True)
    both = ViewConsistencyLoss()(pred, pred_of_view, 3)
    both.backward()
    assert pred.grad.abs().sum() > 0 and pred_of_view.grad.abs().sum() > 0
    pred.grad, pred_of_view.grad = None, None
    detached = ViewConsistencyLoss(detach_target=True)(pred, pred_of_view, 3)
    detached.backward()
    assert pred.grad is None and pred_of_view.grad.abs().sum() > 0
    assert torch.isclose(both, detached)  # same value, only the gradient differs


def test_guidance_adds_weighted_term_to_the_trainer_loss():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    batch = {"image": torch.randn(2, 1, 8, 8, 8), "label": _target()}
    unlabeled = [{"image": torch.randn(2, 1, 8, 8, 8)}]
    seen = {}

    def record(engine):
        seen["loss"] = float(engine.state.output[Keys.LOSS].detach())
        seen["consistency"] = float(engine.state.output["consistency"])

    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch], network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0), loss_function=MaskedDiceFocalLoss(),
    )
    guidance = ConsistencyGuidance(weight=3.0, unlabeled_loader=unlabeled)
    guidance.attach(trainer)
    from monai.engines import IterationEvents

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, record)
    trainer.run()
    supervised = float(MaskedDiceFocalLoss()(net(batch["image"]), batch["label"]))
    assert seen["consistency"] > 0
    assert abs(seen["loss"] - (supervised + 3.0 * seen["consistency"])) < 1e-4
