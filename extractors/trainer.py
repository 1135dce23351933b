"""Training and encoding for the AE-CFE autoencoder (METHODS §1.7).

* :class:`RoiCropDataset` — cells in memory: RoI features (N,256,14,14) float, crops (N,3,128,128) uint8,
  domain ids (N,) int.
* :class:`DomainBatchSampler` — shuffled or domain-balanced batches, the same global order on every process.
* :class:`AutoencoderTrainer` — Adam (lr 1e-3), :class:`~extractors.losses.AECFELoss`, per-step loss logs
  (``losses.jsonl`` + ``logging``), tqdm progress, reconstruction grids (PNG), checkpoints and resume,
  data-parallel training under ``torchrun``.
* :func:`encode_dataset` — codes z for RoI features in batches (eval mode, inference mode).

Speed (the image decoder is ~97 % of a step): the image decoder runs forward *and backward* in micro-batches of
``image_chunk_size`` cells. The cheap part (encoder, feature decoder, alignment on the whole batch) runs once; the
gradient of the image term w.r.t. ĥ is collected chunk by chunk and then pushed through the cheap part. The loss
and the gradients are those of the whole batch (the SSIM mean is a size-weighted mean of the chunk means), but
peak memory scales with the chunk, not the batch (batch 500 at once needs ~20 GB on CPU), and the small tensors
avoid glibc's fresh zeroed pages for every large allocation (see :func:`tune_cpu_allocator`, which the
command-line tools call). Weights and activations are channels-last (oneDNN's fast layout for these transposed
convolutions). On 2 CPU cores a step at batch 64 takes 3.9 s instead of 10.9 s for the reference execution, with
1.0 GB instead of 3.9 GB peak memory; figures and method in ``aecfe/cli/benchmark_autoencoder.py``.

Data parallel (``torchrun``, gloo on CPU / nccl on GPU): every process takes its share of each global batch
(:class:`DomainBatchSampler`), the codes z of all processes are gathered **with gradient**
(``torch.distributed._functional_collectives.all_gather_single``, which PyTorch 2.13 names as the replacement of
the deprecated ``torch.distributed.nn.functional.all_gather``; its backward sums the gradients of each process's
share) so the alignment statistics cover the global batch as under the reference's ``nn.DataParallel``, and the
parameter gradients are averaged by all-reduce after the backward pass. The result equals one process training on
the global batch (tested). The ``DistributedDataParallel`` wrapper is
not used because its reducer allows one backward pass per forward, and the micro-batched image decoder runs
several.
"""
from __future__ import annotations

import ctypes
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from aecfe import checkpoints
from aecfe.distributed import world
from aecfe.errors import InputError
from aecfe.shapes import CROP_SHAPE, ROI_SHAPE
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig, JsonConfig
from extractors.diagnostics import code_statistics, collapse_warning, linear_probe
from extractors.losses import AECFELoss

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "aecfe-autoencoder-checkpoint/1"
LR_SCHEDULES = ("constant", "onecycle")
PRECISIONS = ("fp32", "bf16")


class RoiCropDataset:
    """Cells in memory: ``roi`` (N,256,14,14) float16/32, ``crops`` (N,3,128,128) uint8, ``domains`` (N,) ints.

    numpy arrays or tensors; they are not copied. ``batch(indices)`` returns (roi float32, crops uint8,
    domains int64) tensors for those rows. Domain ids are 0 … n_domains−1. ``labels`` (N,) ints, −1 where unknown,
    are optional: training never uses them, the per-epoch linear probe of the code does.
    """

    def __init__(self, roi, crops, domains, labels=None):
        self.roi = torch.as_tensor(roi)
        self.crops = torch.as_tensor(crops)
        self.domains = torch.as_tensor(domains).long()
        n = len(self.roi)
        self.labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels.shape != (n,):
            raise InputError(f"labels must be (N,) = ({n},), got {self.labels.shape}")
        if tuple(self.roi.shape[1:]) != ROI_SHAPE or not self.roi.is_floating_point():
            raise InputError(f"RoI features must be float (N, 256, 14, 14), got {self.roi.dtype} "
                             f"{tuple(self.roi.shape)}")
        if tuple(self.crops.shape[1:]) != CROP_SHAPE or self.crops.dtype != torch.uint8:
            raise InputError(f"crops must be uint8 (N, 3, 128, 128), got {self.crops.dtype} {tuple(self.crops.shape)}")
        if len(self.crops) != n or self.domains.shape != (n,):
            raise InputError(f"roi, crops and domains disagree on the number of cells: {n}, {len(self.crops)}, "
                             f"{tuple(self.domains.shape)}")
        if n == 0:
            raise InputError("the training set has no cells")
        if int(self.domains.min()) < 0:
            raise InputError(f"domain ids must be >= 0, got {int(self.domains.min())}")

    def __len__(self) -> int:
        return len(self.roi)

    @property
    def n_domains(self) -> int:
        return int(self.domains.max()) + 1

    def batch(self, indices) -> tuple[Tensor, Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.roi[index].float(), self.crops[index], self.domains[index]

    def features(self, indices) -> tuple[Tensor, None, Tensor]:
        """(roi float32, None, domains) for those rows: a batch of the cheap path, which needs no crops."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.roi[index].float(), None, self.domains[index]


class DomainBatchSampler:
    """Index batches for one process of ``num_replicas``; iterate after ``set_epoch(epoch)``.

    Each epoch has a global order of the N cells that depends only on (seed, epoch): a permutation, or with
    ``balance_domains`` a sequence whose every global batch (batch_size × num_replicas cells) draws equally from
    each domain (remainder to random domains), cycling through reshuffled copies of the smaller domains and
    leaving part of the larger ones for later epochs. Global batch b is cut into num_replicas interleaved shares,
    so W processes at batch B see exactly the global batches of one process at batch W·B. A short last global
    batch is padded by wrapping around the order to a multiple of num_replicas (as DistributedSampler does)
    or dropped with ``drop_last``.
    """

    def __init__(self, domains, batch_size: int, *, balance_domains: bool = False, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False):
        if batch_size < 1 or not 0 <= rank < num_replicas:
            raise InputError(f"bad batch sampler settings: batch_size={batch_size}, rank={rank}, "
                             f"num_replicas={num_replicas}")
        self.domains = np.asarray(domains)
        self.batch_size = batch_size
        self.balance_domains = balance_domains
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def __len__(self) -> int:
        n, size = len(self.domains), self.global_batch_size
        return n // size if self.drop_last else math.ceil(n / size)

    def epoch_order(self) -> np.ndarray:
        """The global order of cell indices for the current epoch (length N)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.balance_domains:
            return rng.permutation(len(self.domains))
        groups = [np.flatnonzero(self.domains == d) for d in np.unique(self.domains)]
        streams = [_cycle_shuffled(group, rng) for group in groups]
        order = []
        for start in range(0, len(self.domains), self.global_batch_size):
            size = min(self.global_batch_size, len(self.domains) - start)
            quota = np.full(len(groups), size // len(groups))
            quota[rng.choice(len(groups), size % len(groups), replace=False)] += 1
            batch = np.concatenate([[next(stream) for _ in range(q)] for stream, q in zip(streams, quota)])
            order.append(rng.permutation(batch))
        return np.concatenate(order).astype(np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.epoch_order()
        size = self.global_batch_size
        for b in range(len(self)):
            batch = order[b * size:(b + 1) * size]
            short = -len(batch) % self.num_replicas
            if short:
                batch = np.concatenate([batch, order[:short]])
            yield batch[self.rank::self.num_replicas]


def _broadcast_from_rank0(tensors) -> None:
    """Overwrite each tensor in place with rank 0's values (every process calls this with the same tensors)."""
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def _cycle_shuffled(indices: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield from rng.permutation(indices).tolist()


@dataclass
class TrainerConfig(JsonConfig):
    """Training settings (JSON-serialisable; saved in checkpoints). Reference values in brackets.

    epochs [150]; batch_size per process [500 per GPU × 3 GPUs]; lr [1e-3, Adam]; alignment name and options
    (:func:`~extractors.losses.make_alignment_loss`) ["mmd"]; beta, the alignment weight [5]; source_domain [0];
    ssim_window [10] and ssim_sigma [1.5]; balance_domains (domain-balanced batches) [off]; drop_last [off];
    seed; image_chunk_size — cells per image-decoder micro-batch (0 = whole batch; no effect on the result);
    channels_last; grid_cells, grid_every (reconstruction PNG every n epochs, 0 = never); checkpoint_every
    (epochs, 0 = only at the end); progress (tqdm bars).

    Beyond the reference (all off by default, so the defaults train as the reference does):

    * image_from_epoch — epochs before it train the encoder and feature decoder only (and the code terms): the
      cheap path, ~20x faster per cell than a step with the reference image decoder; the image decoder joins after;
    * beta_warmup_epochs — the alignment weight rises linearly from 0 to beta over these epochs (per step);
    * lr_schedule — ``"constant"`` [reference] or ``"onecycle"`` (torch's OneCycleLR peaking at lr, over all steps;
      the image decoder keeps the constant lr in an Adam of its own, as it joins late);
    * precision — ``"fp32"`` or ``"bf16"`` (torch.autocast of the forward passes; losses in float32);
    * variance_weight, variance_floor — VICReg variance term on the code (:class:`~extractors.losses.CodeVarianceFloor`);
    * feature_loss — ``"mse"`` [reference] or ``"fvu"`` (:class:`~extractors.losses.UnexplainedVarianceLoss`);
    * probe_cells — cells of the fixed set on which each epoch's code diagnostics are computed (0 = none);
    * pca_cells — cells (seeded sample) on which a model with a linear path fits its PCA before the first step.
    """

    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    alignment: str = "mmd"
    alignment_options: dict[str, Any] = field(default_factory=dict)
    beta: float = 5.0
    source_domain: int = 0
    ssim_window: int = 10
    ssim_sigma: float = 1.5
    balance_domains: bool = False
    drop_last: bool = False
    seed: int = 0
    image_chunk_size: int = 8
    channels_last: bool = True
    grid_cells: int = 8
    grid_every: int = 1
    checkpoint_every: int = 1
    progress: bool = True
    image_from_epoch: int = 0
    beta_warmup_epochs: float = 0.0
    lr_schedule: str = "constant"
    precision: str = "fp32"
    variance_weight: float = 0.0
    variance_floor: float = 0.1
    feature_loss: str = "mse"
    probe_cells: int = 1000
    pca_cells: int = 2000

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"unknown lr_schedule {self.lr_schedule!r}; expected one of {LR_SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if self.epochs < 0 or self.batch_size < 1:
            raise InputError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs} and {self.batch_size}")
        if min(self.image_from_epoch, self.probe_cells, self.image_chunk_size, self.pca_cells) < 0:
            raise InputError(f"image_from_epoch, probe_cells, image_chunk_size and pca_cells must be >= 0, got "
                             f"{self.image_from_epoch}, {self.probe_cells}, {self.image_chunk_size}, {self.pca_cells}")
        if self.lr <= 0 or self.beta < 0 or self.beta_warmup_epochs < 0 or self.variance_weight < 0:
            raise InputError(f"lr must be > 0 and beta, beta_warmup_epochs, variance_weight >= 0, got lr={self.lr}, "
                             f"beta={self.beta}, beta_warmup_epochs={self.beta_warmup_epochs}, "
                             f"variance_weight={self.variance_weight}")


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap (no mmap for big blocks, no trimming); returns False where unavailable.

    By default glibc serves every block above its mmap threshold (≤ 32 MB) with fresh pages from the kernel, which
    must be zero-filled on first touch; a training step allocates gigabytes of such blocks. With mmap disabled and
    trimming off, freed blocks are reused instead. Process-wide and irreversible, so only the command-line tools
    call it; peak memory stays that of the largest step. Measured in ``benchmark_autoencoder``.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def reconstruction_grid(crops: Tensor, reconstructions: Tensor, columns: int = 4) -> np.ndarray:
    """RGB uint8 image (rows·H, columns·2W, 3) of (crop | reconstruction) pairs; crops uint8, recon. in [0, 1]."""
    pairs = torch.cat([crops.float() / 255, reconstructions.float().clamp(0, 1)], dim=3)  # (K, 3, H, 2W)
    k, _, height, width = pairs.shape
    rows = math.ceil(k / columns)
    canvas = torch.ones(rows * columns, 3, height + 2, width + 2)
    canvas[:k, :, 1:-1, 1:-1] = pairs
    grid = canvas.view(rows, columns, 3, height + 2, width + 2).permute(0, 3, 1, 4, 2)
    return (grid.reshape(rows * (height + 2), columns * (width + 2), 3) * 255).round().byte().numpy()


class AutoencoderTrainer:
    """Trains an :class:`~extractors.autoencoder.AECFEAutoencoder` with :class:`~extractors.losses.AECFELoss`.

    The model is converted to channels-last when ``config.channels_last``. ``out_dir`` (optional, written by
    rank 0) receives ``losses.jsonl`` (one line per step: epoch, step, loss terms,
    seconds), ``reconstructions_epochNNN.png`` and ``checkpoint.pt``. Under an initialised process group the
    trainer trains data-parallel (see the module docstring); all processes must call :meth:`fit` with the same
    dataset.

    Example:
        >>> model = AECFEAutoencoder()
        >>> trainer = AutoencoderTrainer(model, TrainerConfig(epochs=1, batch_size=4), n_domains=3)
        >>> # trainer.fit(RoiCropDataset(roi, crops, domains)); encode_dataset(model, roi)
    """

    def __init__(self, model: AECFEAutoencoder, config: TrainerConfig | None = None, *, n_domains: int,
                 out_dir: str | Path | None = None):
        self.model = model
        self.config = config or TrainerConfig()
        self.n_domains = n_domains
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rank, self.world_size = world()
        self.device = next(model.parameters()).device
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the adversarial discriminator's initial weights
            self.loss_fn = AECFELoss(cfg.alignment, cfg.beta, cfg.ssim_window, cfg.ssim_sigma,
                                     bottleneck=model.config.bottleneck, n_domains=n_domains,
                                     source_domain=cfg.source_domain, variance_weight=cfg.variance_weight,
                                     variance_floor=cfg.variance_floor, feature_loss=cfg.feature_loss,
                                     **cfg.alignment_options).to(self.device)
        if self.world_size > 1:  # identical initial weights everywhere
            _broadcast_from_rank0([*model.state_dict().values(), *self.loss_fn.parameters()])
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer, self.image_optimizer = self._optimizers()
        self.scheduler = None  # built by fit, which knows the steps per epoch
        self._scheduler_state = None
        self.epoch = 0
        self.step = 0
        self.cells_seen = 0
        self.train_seconds = 0.0

    def _optimizers(self) -> tuple[torch.optim.Adam, torch.optim.Adam | None]:
        """Adam over every parameter; under the one-cycle schedule the image decoder gets an Adam of its own at the
        constant peak lr: it joins late (``image_from_epoch``), when the cycle has annealed the lr of the rest."""
        model, lr = self.model, self.config.lr
        if self.config.lr_schedule != "onecycle":
            return torch.optim.Adam(model.parameters(), lr=lr), None
        image = {id(param) for param in model.image_decoder.parameters()}
        rest = [param for param in model.parameters() if id(param) not in image]
        return torch.optim.Adam(rest, lr=lr), torch.optim.Adam(model.image_decoder.parameters(), lr=lr)

    # ---- one optimisation step ------------------------------------------------------------------------------------

    def _gather(self, z: Tensor, domains: Tensor) -> tuple[Tensor, Tensor]:
        if self.world_size == 1:
            return z, domains
        all_domains = [torch.empty_like(domains) for _ in range(self.world_size)]
        dist.all_gather(all_domains, domains)
        return funcol.all_gather_single(z, 0, dist.group.WORLD), torch.cat(all_domains)

    def _average_gradients(self) -> None:
        """Mean of the gradients over processes, in one all-reduce of a flat (contiguous) buffer."""
        grads = [param.grad for param in self.model.parameters() if param.grad is not None]
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        for grad, average in zip(grads, flat.split([grad.numel() for grad in grads])):
            grad.copy_(average.view(grad.shape))

    def _image_chunks(self, n: int) -> list[tuple[int, int]]:
        size = self.config.image_chunk_size or n
        return [(start, min(start + size, n)) for start in range(0, n, size)]

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    def image_targets(self, crops: Tensor) -> Tensor:
        """Crops (B,3,128,128) uint8 -> the image decoder's targets (B,3,S,S) in [0, 1] (area-averaged to S)."""
        targets = crops.float() / 255
        size = self.model.image_size
        return targets if targets.shape[-1] == size else F.interpolate(targets, size=(size, size), mode="area")

    def training_step(self, roi: Tensor, crops: Tensor | None, domains: Tensor, *, with_image: bool = True,
                      beta: float | None = None) -> dict[str, float]:
        """One Adam step on a batch: roi (B,256,14,14), crops (B,3,128,128) uint8, domains (B,).

        ``with_image=False`` runs the cheap path (encoder, feature decoder, code terms; ``crops`` may be None);
        ``beta`` overrides the alignment weight for this step (warm-up). Returns the loss terms (feature, image
        when computed, alignment unweighted, variance when on, total; plus discriminator for "adversarial"),
        averaged over processes.
        """
        model, loss_fn = self.model.train(), self.loss_fn
        roi, domains = roi.to(self.device), domains.to(self.device)
        h = model.scale_input(roi)
        if self.config.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        if self.image_optimizer is not None:
            self.image_optimizer.zero_grad(set_to_none=True)

        with self._autocast():
            z = model.encode(h)
            h_hat = model.decode_features(z)
        z, h_hat = z.float(), h_hat.float()
        all_z, all_domains = self._gather(z, domains)
        terms = {"feature": loss_fn.feature_loss(h_hat, h), **loss_fn.code_terms(all_z, all_domains)}

        logged = {name: value.detach() for name, value in terms.items()}
        if with_image:
            # The image decoder, forward and backward, chunk by chunk; its gradient w.r.t. ĥ is gathered in
            # h_hat_leaf.
            targets = self.image_targets(crops.to(self.device))
            h_hat_leaf = h_hat.detach().requires_grad_()
            image = torch.zeros((), device=self.device)
            for start, stop in self._image_chunks(len(h)):
                with self._autocast():
                    reconstruction = model.decode_image(h_hat_leaf[start:stop])
                chunk_loss = loss_fn.image_loss(reconstruction.float(), targets[start:stop]) * ((stop - start) / len(h))
                loss_fn.weighted_sum({"image": chunk_loss}).backward()
                image += chunk_loss.detach()
            torch.autograd.backward([loss_fn.weighted_sum(terms, beta), h_hat], [None, h_hat_leaf.grad])
            logged["image"] = image
        else:
            loss_fn.weighted_sum(terms, beta).backward()

        if self.world_size > 1:
            self._average_gradients()
        self.optimizer.step()
        if self.image_optimizer is not None and with_image:
            self.image_optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        logged["total"] = loss_fn.weighted_sum(logged, beta)
        if hasattr(loss_fn.alignment, "discriminator_step"):
            logged["discriminator"] = loss_fn.alignment.discriminator_step(all_z.detach(), all_domains)
        names = sorted(logged)
        values = torch.stack([logged[name].float() for name in names])
        if self.world_size > 1:
            dist.all_reduce(values)
            values /= self.world_size
        return dict(zip(names, values.tolist()))

    # ---- epochs ---------------------------------------------------------------------------------------------------

    def alignment_weight(self, steps_per_epoch: int) -> float:
        """β for the next step: beta·min(1, step / (beta_warmup_epochs·steps per epoch)); beta without warm-up."""
        warmup_steps = self.config.beta_warmup_epochs * steps_per_epoch
        if warmup_steps <= 0:
            return self.config.beta
        return self.config.beta * min(1.0, self.step / warmup_steps)

    def _build_scheduler(self, steps_per_epoch: int) -> None:
        if self.config.lr_schedule != "onecycle" or self.scheduler is not None or self.config.epochs == 0:
            return
        total_steps = self.config.epochs * steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=self.config.lr,
                                                             total_steps=total_steps)
        if self._scheduler_state is None:
            return
        scheduler_state, optimizer_state = self._scheduler_state
        if scheduler_state["total_steps"] == total_steps:  # resumed: the schedule's position, and the learning
            self.scheduler.load_state_dict(scheduler_state)  # rate and momentum it had set (which the
            self.optimizer.load_state_dict(optimizer_state)  # scheduler's constructor overwrote)
        else:  # resumed with another number of epochs: the new schedule, at the step reached
            logger.warning("the one-cycle schedule was %d steps and is now %d: continuing the new one at step %d",
                           scheduler_state["total_steps"], total_steps, self.step)
            self.scheduler.last_epoch = self.step - 1
            self.scheduler.step()

    def probe_rows(self, dataset: RoiCropDataset) -> np.ndarray:
        """The fixed cells (sorted indices) of the per-epoch diagnostics: ``probe_cells`` of them, seeded."""
        return self._seeded_rows(dataset, self.config.probe_cells, stream=7)

    def _seeded_rows(self, dataset: RoiCropDataset, n: int, stream: int) -> np.ndarray:
        """min(n, N) sorted cell indices drawn without replacement from the random stream (seed, ``stream``)."""
        rng = np.random.default_rng([self.config.seed, stream])
        return np.sort(rng.choice(len(dataset), min(n, len(dataset)), replace=False))

    def diagnose(self, dataset: RoiCropDataset, rows: np.ndarray) -> dict[str, float]:
        """Code statistics and linear probes (:mod:`extractors.diagnostics`) of the current model on ``rows``."""
        if len(rows) == 0:
            return {}
        codes = encode_dataset(self.model, dataset.features(rows)[0], batch_size=256)
        self.model.train()
        statistics = code_statistics(codes)
        statistics.update(linear_probe(codes, dataset.labels[rows], dataset.domains.numpy()[rows],
                                       seed=self.config.seed))
        return statistics

    def init_linear_path(self, dataset: RoiCropDataset) -> None:
        """Fit the model's linear path (if it has an unfitted one) on ``pca_cells`` seeded cells of ``dataset``.

        Rank 0 fits; under a process group its weights are then broadcast, so every process starts alike.
        """
        path = self.model.linear_path
        if path is None or bool(path.fitted):
            return
        if self.rank == 0:
            rows = self._seeded_rows(dataset, self.config.pca_cells, stream=11)
            started = time.perf_counter()
            h = self.model.scale_input(dataset.features(rows)[0])
            statistics = self.model.init_linear_path(h, seed=self.config.seed)
            logger.info("linear path: PCA of %d cells on %d axes explains %.1f %% of the scaled maps' variance "
                        "(%.1f s)", len(rows), statistics["pca_axes"], 100 * statistics["pca_explained"],
                        time.perf_counter() - started)
        if self.world_size > 1:
            _broadcast_from_rank0(self.model.state_dict().values())

    def fit(self, dataset: RoiCropDataset) -> "AutoencoderTrainer":
        """Train from the current epoch (0, or the one a loaded checkpoint reached) to ``config.epochs``.

        A model with a linear path first fits it (:meth:`init_linear_path`; not again after a resume).
        After every epoch rank 0 appends a learning-curve record to ``curves.jsonl`` (epoch, step, cells seen,
        training seconds, mean of every loss term, β and learning rate, :meth:`diagnose`) and warns loudly when
        the code collapses.
        """
        cfg = self.config
        if dataset.n_domains > self.n_domains:
            raise InputError(f"the data has domain ids up to {dataset.n_domains - 1}, the trainer was built for "
                             f"{self.n_domains} domains")
        sampler = DomainBatchSampler(dataset.domains.numpy(), cfg.batch_size, balance_domains=cfg.balance_domains,
                                     seed=cfg.seed, num_replicas=self.world_size, rank=self.rank,
                                     drop_last=cfg.drop_last)
        if len(sampler) == 0:
            raise InputError(f"{len(dataset)} cells make no full batch of {sampler.global_batch_size} "
                             "(lower batch_size or turn drop_last off)")
        self._build_scheduler(len(sampler))
        self.init_linear_path(dataset)
        writer = self.rank == 0 and self.out_dir is not None
        if writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        grid_cells = np.linspace(0, len(dataset) - 1, min(cfg.grid_cells, len(dataset))).round().astype(int)
        probe = self.probe_rows(dataset) if self.rank == 0 else np.empty(0, dtype=np.int64)
        for epoch in range(self.epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            with_image = epoch >= cfg.image_from_epoch
            started, sums, cells = time.perf_counter(), defaultdict(float), 0
            bar = tqdm(sampler, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not (cfg.progress and self.rank == 0), leave=False)
            for indices in bar:
                step_start = time.perf_counter()
                roi, crops, domains = dataset.batch(indices) if with_image else dataset.features(indices)
                beta = self.alignment_weight(len(sampler))
                terms = self.training_step(roi, crops, domains, with_image=with_image, beta=beta)
                self.step += 1
                cells += len(indices) * self.world_size
                for name, value in terms.items():
                    sums[name] += value
                bar.set_postfix(total=f"{terms['total']:.4f}")
                if writer:
                    record = {"epoch": epoch + 1, "step": self.step, **terms, "beta": beta,
                              "seconds": round(time.perf_counter() - step_start, 4)}
                    with open(self.out_dir / "losses.jsonl", "a", encoding="utf-8") as log:
                        log.write(json.dumps(record) + "\n")
            self.epoch = epoch + 1
            seconds = time.perf_counter() - started
            self.cells_seen += cells
            self.train_seconds += seconds
            means = {name: total / len(sampler) for name, total in sorted(sums.items())}
            diagnostics = self.diagnose(dataset, probe)
            self._log_epoch(means, diagnostics, seconds, cells, with_image, self.alignment_weight(len(sampler)),
                            writer)
            last = self.epoch == cfg.epochs
            if writer and cfg.grid_every and with_image and (self.epoch % cfg.grid_every == 0 or last):
                self.save_reconstruction_grid(self.out_dir / f"reconstructions_epoch{self.epoch:03d}.png",
                                              *dataset.batch(grid_cells)[:2])
            if writer and (last or (cfg.checkpoint_every and self.epoch % cfg.checkpoint_every == 0)):
                self.save_checkpoint(self.out_dir / "checkpoint.pt")
        return self

    def _log_epoch(self, means: dict[str, float], diagnostics: dict[str, float], seconds: float, cells: int,
                   with_image: bool, beta: float, writer: bool) -> None:
        cfg = self.config
        text = "  ".join(f"{name} {value:.5f}" for name, value in means.items())
        shown = "  ".join(f"{name} {value:.3f}" for name, value in diagnostics.items())
        logger.info("epoch %d/%d: %s  |  %s  (%.1f s, %.1f cells/s%s)", self.epoch, cfg.epochs, text, shown,
                    seconds, cells / seconds, "" if with_image else ", cheap path")
        warning = collapse_warning(diagnostics) if diagnostics else None
        if warning:
            logger.warning("epoch %d: %s", self.epoch, warning)
        if writer:
            record = {"epoch": self.epoch, "step": self.step, "cells_seen": self.cells_seen,
                      "train_seconds": round(self.train_seconds, 2), "image_decoder": with_image,
                      "beta": beta,
                      "lr": self.optimizer.param_groups[0]["lr"], **means, **diagnostics}
            with open(self.out_dir / "curves.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")

    def save_reconstruction_grid(self, path: str | Path, roi: Tensor, crops: Tensor) -> None:
        """PNG of (input crop | reconstruction) pairs for the given cells (a 64 px reconstruction shown at 128)."""
        with torch.inference_mode():
            reconstructions = self.model.eval()(self.model.scale_input(roi.to(self.device)))[2].float().cpu()
        if reconstructions.shape[-2:] != crops.shape[-2:]:
            reconstructions = F.interpolate(reconstructions, size=crops.shape[-2:], mode="nearest")
        Image.fromarray(reconstruction_grid(crops, reconstructions)).save(path)

    # ---- checkpoints ----------------------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """Tensors and primitive containers only, loadable with ``torch.load(..., weights_only=True)``."""
        state = {"format": CHECKPOINT_FORMAT, "model_config": self.model.config.to_dict(),
                 "trainer_config": self.config.to_dict(), "n_domains": self.n_domains, "epoch": self.epoch,
                 "step": self.step, "cells_seen": self.cells_seen, "train_seconds": self.train_seconds,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "loss": self.loss_fn.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.image_optimizer is not None:
            state["image_optimizer"] = self.image_optimizer.state_dict()
        return state

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the checkpoint atomically (temporary file, then rename)."""
        checkpoints.save_atomic(self.checkpoint(), path)

    def load_checkpoint(self, path: str | Path) -> "AutoencoderTrainer":
        """Restore model, optimizer, scheduler, loss (e.g. discriminator) state, epoch and step from ``path``."""
        state = read_checkpoint(path)
        if state["model_config"] != self.model.config.to_dict() or state["n_domains"] != self.n_domains:
            raise InputError(f"{path}: checkpoint of a different model ({state['model_config']}, "
                             f"{state['n_domains']} domains), expected {self.model.config.to_dict()}, "
                             f"{self.n_domains} domains")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.image_optimizer is not None and "image_optimizer" in state:
            self.image_optimizer.load_state_dict(state["image_optimizer"])
        self.loss_fn.load_state_dict(state["loss"])
        self._scheduler_state = (state["scheduler"], state["optimizer"]) if "scheduler" in state else None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.cells_seen = int(state.get("cells_seen", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        return self


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a trainer checkpoint, with its format checked."""
    return checkpoints.read_checkpoint(path, CHECKPOINT_FORMAT, "autoencoder checkpoint")


def load_autoencoder(path: str | Path) -> AECFEAutoencoder:
    """The trained model of a checkpoint, in eval mode on the CPU."""
    state = read_checkpoint(path)
    model = AECFEAutoencoder(AutoencoderConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def encode_dataset(model: AECFEAutoencoder, roi, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Codes z (N, bottleneck) float32 for raw RoI features ``roi`` (N,256,14,14), in eval and inference mode.

    ``roi`` is anything sliceable by rows: a numpy array, a tensor or an h5py dataset (read batch by batch).
    """
    device = next(model.parameters()).device
    model.eval()
    codes = np.empty((len(roi), model.config.bottleneck), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(roi), batch_size), desc="encode", unit="batch", disable=not progress):
            batch = torch.as_tensor(np.asarray(roi[start:start + batch_size])).to(device)
            codes[start:start + len(batch)] = model.encode(model.scale_input(batch)).float().cpu().numpy()
    return codes
