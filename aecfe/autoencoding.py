"""Train an AE-CFE autoencoder on a cell store and write its codes back: the job behind ``train_autoencoder``,
the demo and the comparison.

:func:`train_on_store` loads the training cells (:func:`aecfe.store.training_cells.load_training_cells`: in memory
or streamed), trains (:class:`extractors.trainer.AutoencoderTrainer`, data parallel under ``torchrun``), saves the
checkpoint and the learning-curve PNG, and, given ``embedding``, writes every cell's code into the store through
the store's one resumable embedding writer (:func:`aecfe.store.embeddings.autoencoder_stage`,
:func:`~aecfe.store.embeddings.write_embedding`: the attribute schema of every embedding).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from aecfe.plots import plot_learning_curves
from aecfe.store import autoencoder_stage, write_embedding
from aecfe.store.training_cells import StoreCells, load_training_cells
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig
from extractors.trainer import AutoencoderTrainer, TrainerConfig

logger = logging.getLogger(__name__)


def write_learning_curves(run: str | Path) -> Path | None:
    """``curves.png`` from the run's ``curves.jsonl`` (against cells seen), if there is one."""
    curves = Path(run) / "curves.jsonl"
    if not curves.exists():
        return None
    records = [json.loads(line) for line in curves.read_text(encoding="utf-8").splitlines() if line.strip()]
    return plot_learning_curves({Path(run).name: records}, Path(run) / "curves.png")


def train_on_store(store_path: str | Path, out: str | Path, model_config: AutoencoderConfig,
                   trainer_config: TrainerConfig, *, embedding: str | None = None, device: str | None = None,
                   max_cells: int | None = None, source: str | None = None, exclude_domains: Sequence[str] = (),
                   max_memory_gb: float = 2.0, stream: bool | None = None, resume: str | Path | None = None,
                   rank: int = 0, world_size: int = 1, encode_batch: int = 256) -> Path:
    """Train on the store's cells into ``out`` (``checkpoint.pt``, ``losses.jsonl``, ``curves.jsonl`` and
    ``curves.png``, reconstruction grids); returns the checkpoint path.

    ``device``: the training device (default CPU). ``embedding``: after training, rank 0 encodes every cell of
    the store (the left-out domains' too) and writes the codes under this name, with the model's identity and the
    domain ids of training. The other arguments select the training cells (see ``load_training_cells``).
    """
    out = Path(out)
    dataset, domain_names = load_training_cells(store_path, max_cells=max_cells, source=source,
                                                seed=trainer_config.seed, exclude_domains=exclude_domains,
                                                max_memory_gb=max_memory_gb, stream=stream)
    logger.info("%d cells, domains %s (id = position; %r is the alignment source), %d process(es)", len(dataset),
                domain_names, domain_names[0], world_size)
    torch.manual_seed(trainer_config.seed)
    model = AECFEAutoencoder(model_config).to(torch.device(device or "cpu"))
    trainer = AutoencoderTrainer(model, trainer_config, n_domains=len(domain_names), out_dir=out)
    if resume:
        trainer.load_checkpoint(resume)
        logger.info("resumed from %s at epoch %d", resume, trainer.epoch)
    trainer.fit(dataset)
    if isinstance(dataset, StoreCells):  # its read handle would lock out the embedding's writer
        dataset.close()
    checkpoint = out / "checkpoint.pt"
    if rank != 0:
        return checkpoint
    write_learning_curves(out)
    if not checkpoint.exists():  # resumed from a finished run elsewhere: nothing was trained
        trainer.save_checkpoint(checkpoint)
    if embedding:
        stage = autoencoder_stage(checkpoint, embedding, batch_size=encode_batch,
                                  extra_attrs={"domain_ids": domain_names})
        write_embedding(store_path, stage, progress=trainer_config.progress)  # another model's is refused by name
        logger.info("wrote embedding %r into %s", embedding, store_path)
    return checkpoint
