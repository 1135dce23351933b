"""Train the AE-CFE autoencoder on the RoI features and crops of an HDF5 cell store, then (optionally) write the
codes of every cell back into the store as an embedding.

Usage::

    python scripts/train_autoencoder.py cells.h5 --out runs/ae --epochs 150 --batch-size 64 --embedding aecfe
    torchrun --nproc_per_node 2 scripts/train_autoencoder.py cells.h5 --out runs/ae ...   # data parallel

Domains: the store's ``domain`` names become ids 0 … K−1 with the alignment source (``--source-domain``, default
the first name in sorted order) as 0 and the others in sorted order. The training run writes ``losses.jsonl``,
reconstruction grids, ``curves.jsonl`` / ``curves.png`` (per-epoch learning curves and code diagnostics) and
``checkpoint.pt`` into ``--out``; ``--resume`` continues from a checkpoint. ``--recipe`` picks the settings
(:mod:`extractors.recipes`: ``aecfe``, the default, or ``reference``); every other option overrides one of them.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from aecfe.autoencoding import train_on_store
from aecfe.cli import add_device, key_value, nonnegative_float, nonnegative_int, positive_float, positive_int
from extractors.autoencoder import GROUP_NORMS, IMAGE_DECODERS, INPUT_SCALINGS, AutoencoderConfig
from extractors.losses import ALIGNMENT_LOSSES
from extractors.recipes import DEFAULT_RECIPE, RECIPES, recipe_configs
from aecfe.devices import resolve_device
from aecfe.distributed import init_distributed
from extractors.trainer import LR_SCHEDULES, PRECISIONS, TrainerConfig, tune_cpu_allocator

logger = logging.getLogger(__name__)

MODEL_FIELDS = ("bottleneck", "group_norm", "input_scaling", "image_decoder", "linear_path")
TRAINER_FIELDS = ("epochs", "batch_size", "lr", "alignment", "beta", "beta_warmup_epochs", "variance_weight",
                  "variance_floor", "feature_loss", "image_from_epoch", "lr_schedule", "precision", "probe_cells",
                  "pca_cells", "balance_domains", "drop_last", "seed", "image_chunk_size", "grid_every", "checkpoint_every")
FROM_RECIPE = argparse.SUPPRESS
"""Default of every model and training option: absent from the parsed arguments, so the recipe's value holds."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="HDF5 cell store with RoI features and crops")
    parser.add_argument("--out", type=Path, required=True, help="run folder: logs, grids, checkpoint")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                        help="named settings (extractors.recipes); every option below overrides one of them "
                             f"(default: {DEFAULT_RECIPE})")
    model = parser.add_argument_group("model (defaults: the recipe's)")
    model.add_argument("--bottleneck", type=positive_int, default=FROM_RECIPE)
    model.add_argument("--group-norm", choices=GROUP_NORMS, default=FROM_RECIPE)
    model.add_argument("--input-scaling", choices=INPUT_SCALINGS, default=FROM_RECIPE)
    model.add_argument("--image-decoder", choices=IMAGE_DECODERS, default=FROM_RECIPE,
                       help="reference: METHODS 1.5, 128 px; light: 64 px, ~10x cheaper")
    model.add_argument("--linear-path", type=nonnegative_int, default=FROM_RECIPE, metavar="M",
                       help="PCA-initialised linear path on the top M principal axes beside the convolutions "
                            "(0: the reference's convolutions alone)")
    train = parser.add_argument_group("training (defaults: the recipe's)")
    train.add_argument("--epochs", type=nonnegative_int, default=FROM_RECIPE)
    train.add_argument("--batch-size", type=positive_int, default=FROM_RECIPE, help="cells per batch and process")
    train.add_argument("--lr", type=positive_float, default=FROM_RECIPE, help="(peak) learning rate of Adam")
    train.add_argument("--alignment", choices=sorted(ALIGNMENT_LOSSES), default=FROM_RECIPE)
    train.add_argument("--alignment-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="option of the alignment loss, e.g. standardize=false, pairing=all (repeatable)")
    train.add_argument("--beta", type=nonnegative_float, default=FROM_RECIPE, help="alignment weight")
    train.add_argument("--beta-warmup-epochs", type=nonnegative_float, default=FROM_RECIPE,
                       help="the alignment weight rises linearly from 0 to --beta over these epochs")
    train.add_argument("--variance-weight", type=nonnegative_float, default=FROM_RECIPE,
                       help="weight of the VICReg variance floor on the code (0: off)")
    train.add_argument("--variance-floor", type=nonnegative_float, default=FROM_RECIPE,
                       help="per-dimension std the variance term asks of the code")
    train.add_argument("--feature-loss", choices=("mse", "fvu"), default=FROM_RECIPE,
                       help="feature reconstruction: plain MSE (reference) or the fraction of variance unexplained")
    train.add_argument("--image-from-epoch", type=nonnegative_int, default=FROM_RECIPE,
                       help="epochs before it train the encoder and feature decoder only (cheap path)")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=FROM_RECIPE)
    train.add_argument("--precision", choices=PRECISIONS, default=FROM_RECIPE,
                       help="bf16: autocast of the forward passes (CPUs with AVX512-BF16/AMX, recent GPUs)")
    train.add_argument("--probe-cells", type=nonnegative_int, default=FROM_RECIPE,
                       help="cells of the per-epoch code diagnostics (linear probes, spread, rank); 0: none")
    train.add_argument("--pca-cells", type=nonnegative_int, default=FROM_RECIPE,
                       help="cells on which the linear path fits its PCA before training")
    train.add_argument("--balance-domains", action=argparse.BooleanOptionalAction, default=FROM_RECIPE,
                       help="domain-balanced batches")
    train.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=FROM_RECIPE)
    train.add_argument("--seed", type=int, default=FROM_RECIPE)
    train.add_argument("--source-domain", help="domain name used as alignment source (id 0)")
    train.add_argument("--max-cells", type=positive_int, help="train on a seeded random subset of this many cells")
    train.add_argument("--exclude-domain", action="append", default=[], metavar="NAME",
                       help="leave this domain's cells out of training (repeatable; they are still encoded)")
    train.add_argument("--resume", type=Path, help="checkpoint to continue from")
    speed = parser.add_argument_group("speed and output")
    speed.add_argument("--image-chunk-size", type=nonnegative_int, default=FROM_RECIPE,
                       help="cells per image-decoder micro-batch (0: whole batch); same result, less memory")
    speed.add_argument("--no-channels-last", action="store_true")
    speed.add_argument("--no-allocator-tuning", action="store_true",
                       help="leave glibc's allocator alone (slower on CPU, see tune_cpu_allocator)")
    speed.add_argument("--threads", type=positive_int, help="torch threads per process")
    speed.add_argument("--max-memory-gb", type=positive_float, default=2.0,
                       help="hold the training cells in memory up to this size, else stream them from the store")
    speed.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                       help="force streaming from the store (--stream) or loading into memory (--no-stream)")
    add_device(speed, "; under torchrun each process its own")
    speed.add_argument("--grid-every", type=nonnegative_int, default=FROM_RECIPE)
    speed.add_argument("--checkpoint-every", type=nonnegative_int, default=FROM_RECIPE)
    speed.add_argument("--no-progress", action="store_true")
    speed.add_argument("--embedding", help="after training, write every cell's code into the store under this name")
    speed.add_argument("--encode-batch", type=positive_int, default=256)
    return parser


def configs_from_args(args: argparse.Namespace) -> tuple[AutoencoderConfig, TrainerConfig]:
    """The recipe's model and trainer configs with the options given on the command line."""
    given = vars(args)
    trainer = {name: given[name] for name in TRAINER_FIELDS if name in given}
    if args.alignment_option:
        trainer["alignment_options"] = dict(args.alignment_option)
    trainer.update(channels_last=not args.no_channels_last, progress=not args.no_progress)
    return recipe_configs(args.recipe, model={name: given[name] for name in MODEL_FIELDS if name in given},
                          trainer=trainer)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world_size = init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu" and not args.no_allocator_tuning:
        tune_cpu_allocator()

    model_config, config = configs_from_args(args)
    logger.info("recipe %r: %s; %s", args.recipe, model_config.to_json(), config.to_json())
    train_on_store(args.store, args.out, model_config, config, embedding=args.embedding, device=str(device),
                   max_cells=args.max_cells, source=args.source_domain, exclude_domains=args.exclude_domain,
                   max_memory_gb=args.max_memory_gb, stream=args.stream, resume=args.resume, rank=rank,
                   world_size=world_size, encode_batch=args.encode_batch)
    if world_size > 1:
        torch.distributed.destroy_process_group()
    return 0
