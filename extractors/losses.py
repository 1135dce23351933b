"""Domain-alignment losses on autoencoder codes, and the total AE-CFE loss (METHODS §1.6, §1.8, §8.2, §8.6, §8.7).

Every alignment loss is an ``nn.Module`` called as ``loss(z, domains)`` with codes z (B, D) and integer domain
ids (B,) in [0, n_domains), and returns a scalar tensor. They are found by name with
:func:`make_alignment_loss`: ``"mmd"`` (the reference's moment matching), ``"kmmd"`` (Gaussian-kernel MMD²),
``"nd"`` (alignment to N(0, I)), ``"adversarial"`` (ADDA-style discriminator), ``"coral"`` (Deep CORAL) and
``"none"``. Each loss class carries the alignment weight β it is meant to run with (``default_beta``, read by
:func:`default_beta`): 1 for the adversarial loss (METHODS §8.7), 5 for the others (the reference code's).

Pairing (the pairwise losses "mmd", "kmmd", "coral"): ``pairing="source"`` (reference) sums the loss over the pairs
(source, t) for every other domain t present in the batch; ``pairing="all"`` sums over every unordered pair of
present domains. The reference's source is domain 0 (Matek-19).

Small domains (the reference gives NaN there; here every value and gradient stays finite): a domain with no sample
in the batch takes no part; a statistic that needs two samples (a covariance, an unbiased kernel estimate) is
skipped — contributes 0 — when either side of the pair has a single sample, while the mean terms still count.
A loss with nothing to compare returns ``0·Σz``: exactly zero, but connected to z, so that a backward pass always
reaches z (under data-parallel training every process then runs the same collectives).
"""
from __future__ import annotations

import inspect
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecfe.errors import InputError
from extractors.ssim import SSIMLoss

PAIRINGS = ("source", "all")


def split_by_domain(z: Tensor, domains: Tensor) -> dict[int, Tensor]:
    """Codes (B, D) grouped by domain id: {domain: (n_domain, D)} for the domains present, in increasing id."""
    if z.dim() != 2 or domains.shape != z.shape[:1]:
        raise ValueError(f"alignment losses need z (B, D) and domains (B,), got {tuple(z.shape)} "
                         f"and {tuple(domains.shape)}")
    return {int(d): z[domains == d] for d in torch.unique(domains).tolist()}


def _zero(z: Tensor) -> Tensor:
    """A scalar 0 (+0.0) that is part of z's autograd graph."""
    return z.new_zeros(()) + 0.0 * z.sum()


def _symmetric_softmax_kl(cov_a: Tensor, cov_b: Tensor) -> Tensor:
    """0.5·[KL(P_a‖P_b) + KL(P_b‖P_a)] with P = softmax(cov, dim=0), element-mean reduction (÷ D²).

    This is the reference's ``KLDivLoss()`` (reduction 'mean') applied both ways to column-softmaxed covariances,
    written as 0.5·mean_ij[(P_a − P_b)(log P_a − log P_b)] (the two KL sums added), with log-softmax instead of
    log(softmax) (identical values, no underflow).
    """
    log_a, log_b = F.log_softmax(cov_a, dim=0), F.log_softmax(cov_b, dim=0)
    return 0.5 * ((log_a.exp() - log_b.exp()) * (log_a - log_b)).mean()


def moment_matching_distance(z_a: Tensor, z_b: Tensor) -> Tensor:
    """The reference ``calculate_mmd`` for one pair: MSE of the means + symmetric KL of softmaxed covariances.

    z_a (n_a, D), z_b (n_b, D)::

        L = (1/D)·Σ_j (m_a,j − m_b,j)² + (0.5/D²)·Σ_ij [P_a(log P_a − log P_b) + P_b(log P_b − log P_a)]_ij

    with m the column means, Σ = torch.cov(Z.T) (unbiased, D×D) and P = softmax(Σ, dim=0). The covariance term is
    skipped (0) when n_a < 2 or n_b < 2.
    """
    loss = F.mse_loss(z_a.mean(0), z_b.mean(0))
    if len(z_a) >= 2 and len(z_b) >= 2:
        loss = loss + _symmetric_softmax_kl(torch.cov(z_a.T), torch.cov(z_b.T))
    return loss


DEFAULT_BETA = 5.0
"""The alignment weight β of a loss that documents no other (the reference code's β = 5)."""


class _PairwiseAlignment(nn.Module):
    """Sum of ``pair_loss(z_a, z_b)`` over the domain pairs chosen by ``pairing`` (see the module docstring)."""

    default_beta = DEFAULT_BETA
    """The alignment weight β of the moment and kernel losses (mmd, kmmd, coral): the reference code's 5."""

    def __init__(self, pairing: str = "source", source_domain: int = 0):
        super().__init__()
        if pairing not in PAIRINGS:
            raise InputError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")
        self.pairing = pairing
        self.source_domain = source_domain

    def pairs(self, present: list[int]) -> list[tuple[int, int]]:
        """Domain pairs compared for the domains present in a batch (sorted ids)."""
        if self.pairing == "all":
            return list(itertools.combinations(present, 2))
        if self.source_domain not in present:
            return []
        return [(self.source_domain, d) for d in present if d != self.source_domain]

    def pair_loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, z: Tensor, domains: Tensor) -> Tensor:
        groups = split_by_domain(z, domains)
        total = _zero(z)
        for a, b in self.pairs(list(groups)):
            total = total + self.pair_loss(groups[a], groups[b])
        return total

    def extra_repr(self) -> str:
        return f"pairing={self.pairing!r}, source_domain={self.source_domain}"


class MomentMatchingLoss(_PairwiseAlignment):
    """"mmd": the reference's moment matching (not a kernel MMD), summed over domain pairs.

    L = Σ_(s,t) [MSE(mean z_s, mean z_t) + 0.5·(1/D²)·Σ_ij symKL(softmax(Σ_s, 0), softmax(Σ_t, 0))_ij], see
    :func:`moment_matching_distance`. z (B, D), domains (B,) -> scalar.

    Example:
        >>> z = torch.tanh(torch.randn(8, 50)); domains = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
        >>> MomentMatchingLoss()(z, domains).shape   # pairs (0,1) and (0,2)
        torch.Size([])
    """

    def pair_loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return moment_matching_distance(z_a, z_b)


class KernelMMDLoss(_PairwiseAlignment):
    """"kmmd": squared maximum mean discrepancy with a multi-bandwidth Gaussian kernel, summed over domain pairs.

    k(x, y) = (1/K)·Σ_k exp(−‖x − y‖²/(2σ_k²)). For x (m, D) and y (n, D), unbiased (default)::

        MMD² = Σ_{i≠j} k(x_i,x_j)/(m(m−1)) + Σ_{i≠j} k(y_i,y_j)/(n(n−1)) − 2·Σ_ij k(x_i,y_j)/(mn)

    or biased (V-statistic: diagonals included, divided by m², n²). Bandwidths: ``bandwidths`` (σ values), or
    when it is None the median heuristic σ_k² = multiplier_k · median of the pairwise squared distances of the
    pooled pair sample (computed without gradient). The unbiased estimate needs two samples per side: a pair with
    a singleton domain is skipped (0) in that mode.

    Example:
        >>> z = torch.randn(6, 50); domains = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> float(KernelMMDLoss(unbiased=False)(z, torch.zeros(6, dtype=torch.long)))  # one domain: no pair
        0.0
    """

    def __init__(self, bandwidths: tuple[float, ...] | None = None,
                 multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0), unbiased: bool = True,
                 pairing: str = "source", source_domain: int = 0):
        super().__init__(pairing, source_domain)
        if bandwidths is not None and (not bandwidths or min(bandwidths) <= 0):
            raise InputError(f"kernel bandwidths must be positive, got {bandwidths!r}")
        self.bandwidths = None if bandwidths is None else tuple(float(b) for b in bandwidths)
        self.multipliers = tuple(float(m) for m in multipliers)
        self.unbiased = unbiased

    @staticmethod
    def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
        # The expanded form keeps gradients finite at zero distance (torch.cdist's sqrt would not).
        return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)

    def _two_sigma_squared(self, pooled_sq: Tensor) -> Tensor:
        if self.bandwidths is not None:
            return 2 * torch.tensor(self.bandwidths, dtype=pooled_sq.dtype, device=pooled_sq.device) ** 2
        n = pooled_sq.shape[0]
        off_diagonal = pooled_sq.detach()[~torch.eye(n, dtype=torch.bool, device=pooled_sq.device)]
        median = off_diagonal.median().clamp_min(1e-12)
        return 2 * median * torch.tensor(self.multipliers, dtype=pooled_sq.dtype, device=pooled_sq.device)

    def pair_loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        m, n = len(z_a), len(z_b)
        if self.unbiased and min(m, n) < 2:
            return _zero(z_a) + _zero(z_b)
        pooled = torch.cat([z_a, z_b])
        sq = self._squared_distances(pooled, pooled)
        kernel = torch.exp(-sq[None] / self._two_sigma_squared(sq)[:, None, None]).mean(0)
        k_aa, k_bb, k_ab = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
        if self.unbiased:
            within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
            within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
        else:
            within_a, within_b = k_aa.mean(), k_bb.mean()
        return within_a + within_b - 2 * k_ab.mean()

    def extra_repr(self) -> str:
        width = f"bandwidths={self.bandwidths}" if self.bandwidths else f"median x {self.multipliers}"
        return f"{width}, unbiased={self.unbiased}, {super().extra_repr()}"


class CORALLoss(_PairwiseAlignment):
    """"coral": Deep CORAL, L = ‖C_a − C_b‖²_F/(4d²) (+ mean_weight·MSE of the means), summed over domain pairs.

    C = unbiased covariance (d×d) of each side's codes (n, d); the covariance term needs two samples per side and is
    skipped (0) otherwise. ``mean_weight`` > 0 adds the first-moment term (DomainBed's CORAL has one).

    Example:
        >>> z = torch.randn(6, 50); domains = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> CORALLoss()(z, domains) >= 0
        tensor(True)
    """

    def __init__(self, mean_weight: float = 0.0, pairing: str = "source", source_domain: int = 0):
        super().__init__(pairing, source_domain)
        self.mean_weight = mean_weight

    def pair_loss(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        loss = self.mean_weight * F.mse_loss(z_a.mean(0), z_b.mean(0))
        if len(z_a) >= 2 and len(z_b) >= 2:
            d = z_a.shape[1]
            loss = loss + (torch.cov(z_a.T) - torch.cov(z_b.T)).pow(2).sum() / (4 * d * d)
        return loss

    def extra_repr(self) -> str:
        return f"mean_weight={self.mean_weight}, {super().extra_repr()}"


class NormalAlignmentLoss(nn.Module):
    """"nd" (ND-AE-DA, METHODS §1.8.4/§8.6): pull every domain's codes toward a standard normal N(0, I_D).

    All domains present are targets: L = Σ_k L_k, with the moment loss of :func:`moment_matching_distance` between
    the codes z_k (n_k, D) and the reference distribution:

    * ``reference="analytic"`` (default): μ₀ = 0 and Σ₀ = I exactly, so
      L_k = (1/D)·‖m_k‖² + symKL(softmax(Σ_k, 0), softmax(I, 0)) (÷ D², as "mmd"); deterministic, no sampling
      noise in the target (a sampled Σ₀ of n_k draws has off-diagonals of order 1/√n_k that the codes would chase).
    * ``reference="sampled"``: §8.6's choice, z₀ ~ N(0, I) with n_k draws per domain and step, from a seeded
      generator (its state is saved with the module's state_dict).

    The covariance term needs n_k ≥ 2. Tanh-bounded codes cannot reach unit variance, so the loss never reaches 0.

    Example:
        >>> z = torch.tanh(torch.randn(8, 50)); domains = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
        >>> NormalAlignmentLoss()(z, domains) > 0
        tensor(True)
    """

    default_beta = DEFAULT_BETA

    def __init__(self, reference: str = "analytic", seed: int = 0):
        super().__init__()
        if reference not in ("analytic", "sampled"):
            raise InputError(f"unknown normal reference {reference!r}; expected 'analytic' or 'sampled'")
        self.reference = reference
        self.generator = torch.Generator().manual_seed(seed)

    def _domain_loss(self, z_k: Tensor) -> Tensor:
        if self.reference == "sampled":
            z0 = torch.randn(z_k.shape, generator=self.generator).to(z_k)
            return moment_matching_distance(z_k, z0)
        loss = z_k.mean(0).pow(2).mean()
        if len(z_k) >= 2:
            identity = torch.eye(z_k.shape[1], dtype=z_k.dtype, device=z_k.device)
            loss = loss + _symmetric_softmax_kl(torch.cov(z_k.T), identity)
        return loss

    def forward(self, z: Tensor, domains: Tensor) -> Tensor:
        total = _zero(z)
        for z_k in split_by_domain(z, domains).values():
            total = total + self._domain_loss(z_k)
        return total

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return f"reference={self.reference!r}"


class AdversarialAlignment(nn.Module):
    """"adversarial" (AAE-DA, METHODS §1.8.5/§8.7): a domain discriminator on z with ADDA-style inverted labels.

    Discriminator: MLP D -> hidden -> hidden -> n_domains with ReLU between, logits -> log-softmax -> NLL (i.e.
    cross-entropy), trained by its own Adam (lr 1e-3) in :meth:`discriminator_step`, alternating with the
    autoencoder step. The autoencoder's alignment term (``forward`` = :meth:`generator_loss`) labels the codes of
    every non-source domain as the source domain::

        L_G = mean over non-source samples i of −log softmax(D(z_i))[source]      (0 if there are none)
        L_D = mean over all samples i of −log softmax(D(z_i))[domain_i]

    §8.7 weights L_G by 1 relative to reconstruction: ``default_beta`` = 1 (:func:`default_beta`); hidden width 128.
    The discriminator's optimizer state is saved with the module's state_dict (extra state).

    Example:
        >>> adv = AdversarialAlignment(bottleneck=50, n_domains=3)
        >>> z = torch.tanh(torch.randn(8, 50)); domains = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
        >>> d_loss = adv.discriminator_step(z, domains)   # one Adam step of the discriminator
        >>> g_loss = adv.generator_loss(z, domains)       # add beta * g_loss to the autoencoder loss
    """

    default_beta = 1.0
    """METHODS §8.7: the generator term weighs as much as the reconstruction."""

    def __init__(self, bottleneck: int = 50, n_domains: int = 3, source_domain: int = 0, hidden: int = 128,
                 lr: float = 1e-3):
        super().__init__()
        if not 0 <= source_domain < n_domains:
            raise InputError(f"source domain {source_domain} is not one of the {n_domains} domains")
        self.n_domains = n_domains
        self.source_domain = source_domain
        self.discriminator = nn.Sequential(nn.Linear(bottleneck, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                           nn.ReLU(), nn.Linear(hidden, n_domains))
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr)

    def _check(self, domains: Tensor) -> None:
        if len(domains) and (int(domains.min()) < 0 or int(domains.max()) >= self.n_domains):
            raise InputError(f"domain ids must lie in [0, {self.n_domains}), got "
                             f"[{int(domains.min())}, {int(domains.max())}]")

    def generator_loss(self, z: Tensor, domains: Tensor) -> Tensor:
        self._check(domains)
        targets = domains != self.source_domain
        if not bool(targets.any()):
            return _zero(z)
        log_probs = F.log_softmax(self.discriminator(z[targets]), dim=1)
        return F.nll_loss(log_probs, torch.full_like(domains[targets], self.source_domain))

    forward = generator_loss

    def discriminator_step(self, z: Tensor, domains: Tensor) -> Tensor:
        """One optimiser step of the discriminator on detached codes; returns its NLL before the step."""
        self._check(domains)
        self.optimizer.zero_grad(set_to_none=True)
        if len(z) == 0:
            return z.new_zeros(())
        loss = F.nll_loss(F.log_softmax(self.discriminator(z.detach()), dim=1), domains)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class StandardizedAlignment(nn.Module):
    """Any alignment loss computed on codes standardised with the statistics of the whole batch (all domains pooled).

    For z (B, D): z̃ = (z − mean_B z) / sqrt(var_B z + eps) per dimension (biased variance over the B codes,
    gradients flow through both statistics), then L = inner(z̃, domains). The loss is invariant to a per-dimension
    affine map of the code (L(a·z + b) = L(z) for a > 0, up to eps), so it cannot be lowered by shrinking the code
    toward a constant — the trivial minimum of the raw moment matching, which drove the reference code to a spread
    of 0.001 on real cells (DESIGN, "Lessons about the autoencoder"). With the mean term of "mmd" this is a Fisher
    ratio per dimension: the squared distance of the domain means over the pooled variance. Needs B ≥ 2.

    Example:
        >>> loss = StandardizedAlignment(MomentMatchingLoss())
        >>> z = torch.tanh(torch.randn(8, 50)); domains = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
        >>> bool(torch.isclose(loss(z, domains), loss(0.01 * z + 0.3, domains), rtol=1e-3))
        True
    """

    def __init__(self, inner: nn.Module, eps: float = 1e-8):
        super().__init__()
        self.inner = inner
        self.eps = eps

    def forward(self, z: Tensor, domains: Tensor) -> Tensor:
        if len(z) < 2:
            return _zero(z)
        variance, mean = torch.var_mean(z, dim=0, correction=0)
        return self.inner((z - mean) * torch.rsqrt(variance + self.eps), domains)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class CodeVarianceFloor(nn.Module):
    """VICReg's variance term on the code: L = (1/D)·Σ_j max(0, γ − sqrt(var_B z_j + eps)), z (B, D) -> scalar.

    Zero while every dimension of the code spreads at least γ over the batch; a collapsing dimension is pushed back
    (Bardes et al., ICLR 2022, eq. 1, with the standard deviation of the whole batch, all domains pooled).
    """

    def __init__(self, gamma: float = 0.1, eps: float = 1e-4):
        super().__init__()
        if gamma < 0:
            raise InputError(f"the variance floor must be >= 0, got {gamma}")
        self.gamma = gamma
        self.eps = eps

    def forward(self, z: Tensor) -> Tensor:
        if len(z) < 2 or self.gamma == 0:
            return _zero(z)
        return F.relu(self.gamma - torch.sqrt(z.var(dim=0, correction=0) + self.eps)).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, eps={self.eps}"


class UnexplainedVarianceLoss(nn.Module):
    """Feature reconstruction as the fraction of variance unexplained: L = MSE(ĥ, h) / Var_B(h), inputs (B, ...).

    Var_B(h) is the variance of h around its batch mean, averaged over elements (detached: a scale, not a target),
    so L ≈ 1 for the reconstruction of a constant code (the batch mean) and → 0 for a perfect one. The plain MSE of
    min-max scaled RoI features is ~0.03 for the mean cell, so an alignment term weighted β = 5 outweighs all the
    information the code could carry; on this scale β compares with "all of it" (= 1). Needs B ≥ 2.

    Example:
        >>> h = torch.randn(8, 256, 14, 14)
        >>> round(float(UnexplainedVarianceLoss()(h.mean(0, keepdim=True).expand_as(h), h)), 3)
        1.0
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, h_hat: Tensor, h: Tensor) -> Tensor:
        variance = h.detach().var(dim=0, correction=0).mean()
        return F.mse_loss(h_hat, h) / (variance + self.eps)


FEATURE_LOSSES = {"mse": nn.MSELoss, "fvu": UnexplainedVarianceLoss}
"""Feature-reconstruction losses: ``"mse"`` (reference) and ``"fvu"`` (:class:`UnexplainedVarianceLoss`)."""


class NoAlignment(nn.Module):
    """"none" (AE-RF): no alignment; returns 0·Σz."""

    default_beta = DEFAULT_BETA

    def forward(self, z: Tensor, domains: Tensor) -> Tensor:
        return _zero(z)


ALIGNMENT_LOSSES: dict[str, type[nn.Module]] = {
    "mmd": MomentMatchingLoss,
    "kmmd": KernelMMDLoss,
    "nd": NormalAlignmentLoss,
    "adversarial": AdversarialAlignment,
    "coral": CORALLoss,
    "none": NoAlignment,
}


def default_beta(name: str) -> float:
    """The alignment weight β that the alignment loss ``name`` documents (its class's ``default_beta``):
    1 for ``adversarial`` (AAE-DA, METHODS §8.7), :data:`DEFAULT_BETA` = 5 for the others.

    Example:
        >>> default_beta("adversarial"), default_beta("mmd")
        (1.0, 5.0)
    """
    if name not in ALIGNMENT_LOSSES:
        raise InputError(f"unknown alignment loss {name!r}; expected one of {sorted(ALIGNMENT_LOSSES)}")
    return float(ALIGNMENT_LOSSES[name].default_beta)


STANDARDIZABLE = ("mmd", "kmmd", "nd", "coral")
"""The moment and kernel losses, which a constant code minimises; ``standardize=True`` makes them scale-free."""


def make_alignment_loss(name: str, *, bottleneck: int | None = None, n_domains: int | None = None,
                        source_domain: int | None = None, standardize: bool = False, **options) -> nn.Module:
    """Build the alignment loss registered as ``name`` with its ``options``.

    ``bottleneck``, ``n_domains`` and ``source_domain`` describe the training run; each is passed on only to the
    losses whose constructor takes it (and only when given), so callers can pass them for any loss.
    ``standardize=True`` wraps the loss in :class:`StandardizedAlignment` (only the losses of ``STANDARDIZABLE``).

    Example:
        >>> make_alignment_loss("kmmd", n_domains=3, unbiased=False)
        KernelMMDLoss(median x (0.25, 0.5, 1.0, 2.0, 4.0), unbiased=False, pairing='source', source_domain=0)
    """
    if name not in ALIGNMENT_LOSSES:
        raise InputError(f"unknown alignment loss {name!r}; expected one of {sorted(ALIGNMENT_LOSSES)}")
    cls = ALIGNMENT_LOSSES[name]
    accepted = inspect.signature(cls).parameters
    run = {"bottleneck": bottleneck, "n_domains": n_domains, "source_domain": source_domain}
    kwargs = {key: value for key, value in run.items() if value is not None and key in accepted}
    unknown = set(options) - set(accepted)
    if unknown:
        raise InputError(f"alignment loss {name!r} takes no option(s) {sorted(unknown)}; "
                         f"it takes {sorted(accepted)}")
    loss = cls(**kwargs, **options)
    if not standardize:
        return loss
    if name not in STANDARDIZABLE:
        raise InputError(f"standardize applies to the alignment losses {STANDARDIZABLE}, not {name!r}")
    return StandardizedAlignment(loss)


class AECFELoss(nn.Module):
    """The AE-CFE objective: L = MSE(ĥ, h) + (1 − SSIM(r̂, r)) + β·alignment(z, domains) [+ λ·variance(z)].

    METHODS §1.6 is the first three terms. Inputs: z (B, D), ĥ and h (B, 256, 14, 14), r̂ and r (B, 3, S, S) in
    [0, 1] (S the image decoder's output side), domains (B,) int64. ``forward`` returns a dict of scalar tensors
    ``feature``, ``image``, ``alignment`` (unweighted), ``variance`` when ``variance_weight`` > 0, and ``total``.
    β = 5 and SSIM window 10 / σ 1.5 are the reference code's values. ``variance_weight`` λ and ``variance_floor``
    γ add :class:`CodeVarianceFloor` (off by default). ``feature_loss``: ``"mse"`` (reference) or ``"fvu"``, the
    MSE as a fraction of the features' variance (:class:`UnexplainedVarianceLoss`). ``alignment_options`` go to :func:`make_alignment_loss`
    together with ``bottleneck``, ``n_domains`` and ``source_domain``.

    Example:
        >>> loss = AECFELoss("mmd", beta=5.0)
        >>> z = torch.tanh(torch.randn(4, 50)); domains = torch.tensor([0, 0, 1, 1])
        >>> h = torch.rand(4, 256, 14, 14); r = torch.rand(4, 3, 128, 128)
        >>> sorted(loss(z, h, r, h, r, domains))
        ['alignment', 'feature', 'image', 'total']
    """

    def __init__(self, alignment: str = "mmd", beta: float = 5.0, ssim_window: int = 10, ssim_sigma: float = 1.5,
                 bottleneck: int | None = None, n_domains: int | None = None, source_domain: int | None = None,
                 variance_weight: float = 0.0, variance_floor: float = 0.1, feature_loss: str = "mse",
                 **alignment_options):
        super().__init__()
        self.weights = {"feature": 1.0, "image": 1.0, "alignment": float(beta), "variance": float(variance_weight)}
        if feature_loss not in FEATURE_LOSSES:
            raise InputError(f"unknown feature loss {feature_loss!r}; expected one of {sorted(FEATURE_LOSSES)}")
        self.feature_loss = FEATURE_LOSSES[feature_loss]()
        self.image_loss = SSIMLoss(ssim_window, ssim_sigma)
        self.alignment = make_alignment_loss(alignment, bottleneck=bottleneck, n_domains=n_domains,
                                             source_domain=source_domain, **alignment_options)
        self.variance = CodeVarianceFloor(variance_floor)

    def code_terms(self, z: Tensor, domains: Tensor) -> dict[str, Tensor]:
        """The terms on the code alone: ``alignment`` and, when its weight is > 0, ``variance``."""
        terms = {"alignment": self.alignment(z, domains)}
        if self.weights["variance"] > 0:
            terms["variance"] = self.variance(z)
        return terms

    def weighted_sum(self, terms: dict[str, Tensor], beta: float | None = None) -> Tensor:
        """Σ weight·term over the loss terms present in ``terms``; ``beta`` overrides the alignment weight (warm-up)."""
        weights = self.weights if beta is None else {**self.weights, "alignment": float(beta)}
        return sum(weights[name] * value for name, value in terms.items())

    def forward(self, z: Tensor, h_hat: Tensor, r_hat: Tensor, h: Tensor, r: Tensor,
                domains: Tensor) -> dict[str, Tensor]:
        terms = {"feature": self.feature_loss(h_hat, h), "image": self.image_loss(r_hat, r),
                 **self.code_terms(z, domains)}
        return {**terms, "total": self.weighted_sum(terms)}
