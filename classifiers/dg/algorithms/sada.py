"""SADA — stain-aware domain alignment (METHODS §4), with the §8.10-8.12 choices."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecfe.errors import InputError
from classifiers.dg.algorithms.base import Algorithm, register, split_minibatches
from classifiers.dg.color import color_jitter
from classifiers.dg.losses import disc_loss, local_alignment_loss, supcon_loss
from classifiers.dg.stain import stain_augment

CONTRASTIVE = ("disc", "supcon")


@register
class SADA(Algorithm):
    """Two stages, one Adam optimiser over every parameter (its state carries over, §8.11).

    Stage 1 (steps < ``stage1_steps``), representation learning, no classifier gradient: the concatenated batch
    x (N, 3, H, W) becomes N·k views by :func:`~classifiers.dg.stain.stain_augment` (k = ``n_clusters``);
    L = L_contrastive + la_weight · L_LA with

    * global projector f_p = Linear(D, D) → ReLU → Linear(D, ``projection_size``) on the pooled features,
      L2-normalised; L_contrastive = :func:`~classifiers.dg.losses.disc_loss` (paper, default) or
      :func:`~classifiers.dg.losses.supcon_loss` (the code's; ``contrastive="supcon"``), τ = ``temperature``;
    * local projector f_l = 1×1 Conv(C, C) → ReLU → 1×1 Conv(C, ``local_projection_size``) on the last
      convolutional map (returned by the featurizer, no hook), L2-normalised over channels at each position;
      L_LA = :func:`~classifiers.dg.losses.local_alignment_loss`.

    Stage 2: CE of the linear classifier on the raw images with ColorJitter(``jitter``) per image; no stain
    augmentation. SWAD (on by default) only keeps segments from stage 2 (:attr:`swad_start_step`).
    """

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        if self.hparams["contrastive"] not in CONTRASTIVE:
            raise InputError(f"contrastive must be one of {CONTRASTIVE}, got {self.hparams['contrastive']!r}")
        width, channels = self.featurizer.n_outputs, self.featurizer.map_channels
        self.projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                       nn.Linear(width, self.hparams["projection_size"]))
        self.local_projector = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
                                             nn.Conv2d(channels, self.hparams["local_projection_size"], 1))
        self.optimizer = self.adam(self.parameters())

    @property
    def swad_start_step(self) -> int:
        return self.hparams["stage1_steps"]

    def augment(self, x: Tensor) -> Tensor:
        """The stain-augmented views (N·k, 3, H, W), ordered [raw_i, re-stained_i¹, …] per image."""
        hp = self.hparams
        return stain_augment(x, hp["n_clusters"], n_stains=hp["n_stains"], snmf_iterations=hp["snmf_iterations"],
                             snmf_sparsity=hp["snmf_sparsity"], background_percentile=hp["background_percentile"],
                             density_percentile=hp["density_percentile"], dark_threshold=hp["dark_threshold"],
                             kmeans_restarts=hp["kmeans_restarts"], kmeans_iterations=hp["kmeans_iterations"],
                             jitter=hp["jitter"])

    def representation_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(L_contrastive, L_LA) of stage 1 for raw images x (N, 3, H, W) in [0, 1] and labels y (N,)."""
        n, k = len(x), self.hparams["n_clusters"]
        features, maps = self.featurizer.forward_with_maps(self.augment(x))
        z = F.normalize(self.projector(features), dim=1)
        tau = self.hparams["temperature"]
        if self.hparams["contrastive"] == "disc":
            contrastive = disc_loss(z.view(n, k, -1), y, tau)
        else:
            contrastive = supcon_loss(z, y.repeat_interleave(k), tau)
        local = F.normalize(self.local_projector(maps), dim=1)
        return contrastive, local_alignment_loss(local.view(n, k, *local.shape[1:]))

    def update(self, minibatches) -> dict[str, float]:
        step = self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        x, y = torch.cat(xs), torch.cat(ys)
        if step < self.hparams["stage1_steps"]:
            contrastive, local = self.representation_losses(x, y)
            loss = contrastive + self.hparams["la_weight"] * local
            self.optimize(loss, self.optimizer)
            return {"loss": loss.item(), "contrastive": contrastive.item(), "local_alignment": local.item()}
        loss = F.cross_entropy(self.predict(color_jitter(x, *self.hparams["jitter"])), y)
        self.optimize(loss, self.optimizer)
        return {"loss": loss.item()}
