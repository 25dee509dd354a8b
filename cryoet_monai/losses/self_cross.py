"""The self-cross similarity loss of CryoMAE, written as a non-negative PU (positive-unlabeled) risk.

Exemplar embeddings ``e_1..e_E`` are the positives; embeddings ``u_1..u_U`` of unlabeled regions are
a mixture of background and (a fraction ``π``, the class prior) particles nobody annotated. Every
embedding gets the score ``z = cos(·, p) / τ`` against the exemplar prototype ``p`` (the normalised
mean of the normalised exemplar embeddings; for an exemplar itself the prototype of the *other*
exemplars, so an exemplar cannot pull on itself). With the logistic loss ``ℓ(z, ±1) = softplus(∓z)``:

* self term (pull exemplars together): ``R⁺ = mean_i ℓ(z(e_i), +1)``
* cross term (push unlabeled away): ``R_u⁻ = mean_j ℓ(z(u_j), −1)``; because a fraction ``π`` of the
  unlabeled embeddings are particles, the negative risk is estimated PU-style as
  ``R⁻ = R_u⁻ − π · mean_i ℓ(z(e_i), −1)`` and clipped at zero (Kiryo et al. 2017, nnPU), so the
  loss stops pushing once the unlabeled set looks like "π particles + background".

    loss = R⁺ + max(0, R⁻)

(nnPU weighs the positive risk by π as well; CryoMAE's self term is a loss of its own, so it keeps
weight 1 here.) With ``π = 0`` the cross term is an ordinary push-away of every unlabeled region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss


def leave_one_out_prototypes(embeddings: torch.Tensor) -> torch.Tensor:
    """For each row of normalised ``(E, D)`` embeddings, the normalised mean of the other rows (E ≥ 2)."""
    if embeddings.shape[0] < 2:
        raise ValueError(f"the self term needs at least 2 exemplars, got {embeddings.shape[0]}")
    others = embeddings.sum(dim=0, keepdim=True) - embeddings
    return F.normalize(others, dim=-1)


class SelfCrossSimilarityLoss(_Loss):
    """Pull exemplar embeddings together, push unlabeled-region embeddings away (PU-weighted).

    Args:
        class_prior: ``π``, the expected fraction of unlabeled embeddings that are particles (0 ≤ π < 1).
        temperature: ``τ`` dividing the cosine similarities.
    """

    def __init__(self, class_prior: float = 0.2, temperature: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= class_prior < 1.0:
            raise ValueError(f"class_prior must be in [0, 1), got {class_prior!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.class_prior = float(class_prior)
        self.temperature = float(temperature)

    def forward(self, exemplars: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
        """
        Args:
            exemplars: ``(E, D)`` embeddings of the annotated particles (E ≥ 2).
            unlabeled: ``(U, D)`` embeddings of unlabeled regions.
        """
        if exemplars.ndim != 2 or unlabeled.ndim != 2 or exemplars.shape[1] != unlabeled.shape[1]:
            raise ValueError(f"expected (E, D) and (U, D) embeddings, got {tuple(exemplars.shape)} and {tuple(unlabeled.shape)}")
        positives = F.normalize(exemplars, dim=-1)
        z_pos = (positives * leave_one_out_prototypes(positives)).sum(-1) / self.temperature
        prototype = F.normalize(positives.mean(dim=0, keepdim=True), dim=-1)
        z_unl = (F.normalize(unlabeled, dim=-1) @ prototype.T)[:, 0] / self.temperature
        pull = F.softplus(-z_pos).mean()
        push = F.softplus(z_unl).mean() - self.class_prior * F.softplus(z_pos).mean()
        return pull + torch.clamp(push, min=0.0)
