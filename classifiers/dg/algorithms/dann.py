"""DANN, DomainBed version (METHODS §3.2): alternating min-max with a domain discriminator, no gradient reversal."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd

from classifiers.dg.algorithms.base import Algorithm, mlp, register, split_minibatches


@register
class DANN(Algorithm):
    """Featurizer f, classifier g, discriminator h = MLP(n_outputs → width → … → M).

    L_d = CE(h(f(x)), domain) + grad_penalty · mean_i ‖∂ Σ CE / ∂ f(x_i)‖². With ``update_count`` counted from 1,
    a step is a discriminator step (minimise L_d over h) when count mod (1 + d_steps_per_g) < d_steps_per_g,
    otherwise a generator step (minimise CE(g(f(x)), y) − λ·L_d over f and g); with d_steps_per_g = 1 they
    alternate and the first is a generator step. Two Adam optimisers with betas (beta1, 0.9).
    """

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        hp = self.hparams
        self.discriminator = mlp(self.featurizer.n_outputs, num_domains, hp["mlp_width"], hp["mlp_depth"],
                                 hp["mlp_dropout"])
        betas = (hp["beta1"], 0.9)
        self.disc_optimizer = self.adam(self.discriminator.parameters(), hp["lr_d"], hp["weight_decay_d"],
                                        betas=betas)
        self.gen_optimizer = self.adam([*self.featurizer.parameters(), *self.classifier.parameters()],
                                       hp["lr_g"], hp["weight_decay_g"], betas=betas)

    def update(self, minibatches) -> dict[str, float]:
        count = self._count_step() + 1
        xs, ys, ds = split_minibatches(minibatches, self.device)
        x, y, domains = torch.cat(xs), torch.cat(ys), torch.cat(ds)
        z = self.featurizer(x)
        disc_out = self.discriminator(z)
        disc_loss = F.cross_entropy(disc_out, domains)
        if self.hparams["grad_penalty"] > 0:
            grad = autograd.grad(F.cross_entropy(disc_out, domains, reduction="sum"), [z], create_graph=True)[0]
            disc_loss = disc_loss + self.hparams["grad_penalty"] * grad.pow(2).sum(dim=1).mean()
        d_steps = self.hparams["d_steps_per_g"]
        if count % (1 + d_steps) < d_steps:
            self.optimize(disc_loss, self.disc_optimizer)
            return {"disc_loss": disc_loss.item()}
        class_loss = F.cross_entropy(self.classifier(z), y)
        gen_loss = class_loss - self.hparams["lambda"] * disc_loss
        self.optimize(gen_loss, self.gen_optimizer)
        return {"gen_loss": gen_loss.item(), "class_loss": class_loss.item(), "disc_loss": disc_loss.item()}
