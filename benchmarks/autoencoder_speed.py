"""Speed of AE-CFE autoencoder training and encoding: the reference configuration vs the optimised trainer.

Usage: ``python benchmarks/autoencoder_speed.py [--batch-sizes 256 500] [--reference-batch 64] [--rounds 2]
[--configurations bf16 light light-bf16 cheap-path] [--compare-group-norm] [--json out.json]``. The default run
takes a few minutes on 2 cores. Measured figures, with date and machine: ``docs/benchmarks.md``.

* reference: the reference code's execution — whole batch through the image decoder at once, NCHW tensors,
  glibc's default allocator, the group norm computed with the reference's operations
  (:class:`ReferenceOpsGroupNorm`) — with this package's model and loss;
* optimised: the trainer's defaults — image decoder forward+backward in micro-batches of 8 cells, channels-last,
  :func:`~extractors.trainer.tune_cpu_allocator`, the fused :class:`~extractors.autoencoder.ChunkGroupNorm` —
  same model, same loss, same gradients up to float rounding;
* further configurations side by side (``--configurations``, :data:`CONFIGURATIONS`): bf16 autocast, the light
  64-px image decoder, the cheap path without the image decoder.

Every measurement runs in a fresh process (:func:`aecfe.measure.in_fresh_process`: allocator settings and peak
memory are per process); the configurations alternate ``--rounds`` times at ``--reference-batch`` so that all see
the same machine load, and the figure of each run is the median of ``--steps`` timed steps after one warm-up step.
The loss terms of the two configurations on the same seeded data are compared step by step (numerics: largest
relative difference). Peak memory is the process's maximum resident set size
(:func:`aecfe.measure.peak_rss_mb`). Also measured: cells/s of :func:`~extractors.trainer.encode_dataset`
(``--encode-cells``, ``--encode-batch``), optimised steps at ``--batch-sizes``, and with ``--compare-group-norm``
the encoder speed and loss curves of the group-norm variants.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aecfe.measure import in_fresh_process, peak_rss_mb
from aecfe.synthetic import default_domains, make_single_cell_images
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig, ChunkGroupNorm
from extractors.trainer import AutoencoderTrainer, TrainerConfig, encode_dataset, tune_cpu_allocator

logger = logging.getLogger(__name__)

_OPTIMISED = {"image_chunk_size": 8, "channels_last": True, "tune_allocator": True, "group_norm": "chunk"}
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "reference": {"image_chunk_size": 0, "channels_last": False, "tune_allocator": False,
                  "group_norm": "reference-ops"},
    "optimised": _OPTIMISED,
    "bf16": {**_OPTIMISED, "precision": "bf16"},
    "light": {**_OPTIMISED, "image_decoder": "light"},
    "light-bf16": {**_OPTIMISED, "image_decoder": "light", "precision": "bf16"},
    "cheap-path": {**_OPTIMISED, "with_image": False},
}
"""Training configurations timed side by side. ``optimised`` is the trainer's default execution; ``bf16`` the same
model under bf16 autocast (numerics compared with ``optimised``); ``light`` the 64-px image decoder; ``cheap-path``
a step without the image decoder (encoder, feature decoder, alignment: the trainer's epochs before
``image_from_epoch``)."""
SIDE_BY_SIDE = ("reference", "optimised")
GROUP_NORM_VARIANTS = ("reference-ops", "chunk", "torch")


class ReferenceOpsGroupNorm(ChunkGroupNorm):
    """:class:`ChunkGroupNorm` computed with the reference code's operations (view, mean, var, sqrt): the
    baseline that the fused implementation is timed against. Same values."""

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.size()
        x = x.view(n, self.num_groups, -1)
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True)
        x = ((x - mean) / (var + self.eps).sqrt()).view(n, c, h, w)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def build_model(group_norm: str, image_decoder: str = "reference") -> AECFEAutoencoder:
    """The autoencoder with group norm "chunk" (fused), "torch" (nn.GroupNorm) or "reference-ops"."""
    model = AECFEAutoencoder(AutoencoderConfig(group_norm="torch" if group_norm == "torch" else "chunk",
                                               image_decoder=image_decoder))
    if group_norm == "reference-ops":
        for index, layer in enumerate(model.encoder):
            if isinstance(layer, ChunkGroupNorm):
                model.encoder[index] = ReferenceOpsGroupNorm(layer.num_channels, layer.num_groups, layer.eps)
    return model


def synthetic_cells(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n cells: random RoI features (n,256,14,14), synthetic single-cell crops (n,3,128,128) of 3 labs, domains."""
    pool = min(n, 48)
    images, domains = [], []
    for domain_id, style in enumerate(default_domains()):
        for cell in make_single_cell_images(style, -(-pool // 3), seed=seed):
            images.append(cell.image.transpose(2, 0, 1))
            domains.append(domain_id)
    repeat = np.arange(n) % len(images)
    roi = np.random.default_rng(seed).standard_normal((n, 256, 14, 14)).astype(np.float32)
    return roi, np.stack(images)[repeat], np.array(domains)[repeat]


def measure_training(configuration: str, batch_size: int, steps: int, threads: int,
                     group_norm: str | None = None) -> dict[str, Any]:
    """Time ``steps`` training steps (after one warm-up) of one configuration; meant to run in its own process."""
    settings = CONFIGURATIONS[configuration]
    group_norm = group_norm or settings["group_norm"]
    torch.set_num_threads(threads)
    if settings["tune_allocator"]:
        tune_cpu_allocator()
    roi, crops, domains = (torch.as_tensor(a) for a in synthetic_cells(batch_size))
    torch.manual_seed(0)
    trainer = AutoencoderTrainer(build_model(group_norm, settings.get("image_decoder", "reference")),
                                 TrainerConfig(batch_size=batch_size, progress=False,
                                               image_chunk_size=settings["image_chunk_size"],
                                               channels_last=settings["channels_last"],
                                               precision=settings.get("precision", "fp32")), n_domains=3)
    seconds, losses = [], []
    for _ in range(1 + steps):
        start = time.perf_counter()
        losses.append(trainer.training_step(roi, crops, domains, with_image=settings.get("with_image", True)))
        seconds.append(time.perf_counter() - start)
    return {"configuration": configuration, "group_norm": group_norm, "batch_size": batch_size,
            "step_seconds": statistics.median(seconds[1:]), "all_step_seconds": seconds, "losses": losses,
            "peak_rss_mb": peak_rss_mb()}


def measure_encoding(cells: int, batch_size: int, threads: int) -> dict[str, Any]:
    """Cells per second of :func:`~extractors.trainer.encode_dataset` (second of two passes)."""
    torch.set_num_threads(threads)
    roi = synthetic_cells(cells)[0]
    model = AECFEAutoencoder()
    encode_dataset(model, roi[:batch_size], batch_size)
    start = time.perf_counter()
    encode_dataset(model, roi, batch_size)
    seconds = time.perf_counter() - start
    return {"cells": cells, "batch_size": batch_size, "cells_per_second": cells / seconds,
            "peak_rss_mb": peak_rss_mb()}


def measure_encoder(group_norm: str, batch_size: int, repeats: int, threads: int) -> dict[str, Any]:
    """Median seconds of encoder forward+backward (the only part the group norm choice touches)."""
    torch.set_num_threads(threads)
    model = build_model(group_norm)
    h = model.scale_input(torch.as_tensor(synthetic_cells(batch_size)[0]))
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model.encode(h).sum().backward()
        seconds.append(time.perf_counter() - start)
    return {"group_norm": group_norm, "encoder_seconds": statistics.median(seconds[1:])}


def loss_differences(runs_a: list[dict], runs_b: list[dict]) -> dict[str, float]:
    """Largest relative difference per loss term between two runs' step-by-step losses."""
    worst: dict[str, float] = {}
    for terms_a, terms_b in zip(runs_a, runs_b):
        for name, value in terms_a.items():
            difference = abs(value - terms_b[name]) / max(abs(terms_b[name]), 1e-12)
            worst[name] = max(worst.get(name, 0.0), difference)
    return worst


def compare_configurations(batch_size: int, rounds: int, steps: int, threads: int,
                           runs: list[dict[str, Any]], names=SIDE_BY_SIDE) -> dict[str, Any]:
    """Alternate the runs of ``names`` (reference and optimised first) ``rounds`` times (appended to ``runs``);
    medians, speed-ups over the optimised trainer, numerics."""
    for round_index in range(rounds):
        for name in names:
            run = in_fresh_process(measure_training, name, batch_size, steps, threads)
            runs.append(run)
            logger.info("round %d %-9s batch %d: %.2f s/step (%.1f cells/s), peak RSS %.0f MB", round_index + 1,
                        name, batch_size, run["step_seconds"], batch_size / run["step_seconds"],
                        run["peak_rss_mb"])
    by_name = {name: [r for r in runs if r["configuration"] == name] for name in names}
    medians = {name: statistics.median(r["step_seconds"] for r in mine) for name, mine in by_name.items()}
    first_step = loss_differences(by_name["optimised"][0]["losses"][:1], by_name["reference"][0]["losses"][:1])
    all_steps = loss_differences(by_name["optimised"][0]["losses"], by_name["reference"][0]["losses"])
    summary = {"median_step_seconds": medians, "speedup": medians["reference"] / medians["optimised"],
               "speedup_over_optimised": {name: medians["optimised"] / value for name, value in medians.items()},
               "relative_loss_difference_first_step": first_step, "relative_loss_difference_all_steps": all_steps}
    if "bf16" in by_name:
        summary["bf16_relative_loss_difference_first_step"] = loss_differences(
            by_name["bf16"][0]["losses"][:1], by_name["optimised"][0]["losses"][:1])
        logger.info("bf16 vs fp32, first step (same weights): %s",
                    _terms(summary["bf16_relative_loss_difference_first_step"]))
    logger.info("batch %d, median step (s) and speed-up over the optimised trainer:\n%s", batch_size,
                "\n".join(f"  {name:<11} {value:7.3f} s  {batch_size / value:7.1f} cells/s  "
                          f"{medians['optimised'] / value:5.2f}x" for name, value in medians.items()))
    logger.info("relative loss difference optimised vs reference, first step (same weights): %s; largest over %d "
                "steps (Adam amplifies rounding: its first updates are ±lr·sign(g)): %s", _terms(first_step),
                steps + 1, _terms(all_steps))
    return summary


def _terms(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3g}" for name, value in sorted(values.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--reference-batch", type=int, default=64,
                        help="batch size of the side-by-side reference vs optimised comparison")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[],
                        help="further batch sizes to time with the optimised configuration (e.g. 256 500)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating reference/optimised runs (0: skip the comparison)")
    parser.add_argument("--configurations", nargs="+", default=list(SIDE_BY_SIDE), choices=list(CONFIGURATIONS),
                        help="configurations timed side by side (reference and optimised are always included)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per run (after 1 warm-up)")
    parser.add_argument("--encode-cells", type=int, default=4096)
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--compare-group-norm", action="store_true",
                        help="also compare the chunked (faithful) and nn.GroupNorm(40) variants: encoder speed and "
                             "the loss curve of --gn-steps optimised steps at batch 16")
    parser.add_argument("--gn-steps", type=int, default=20)
    parser.add_argument("--json", help="write all measurements to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = args.threads or torch.get_num_threads()
    results: dict[str, Any] = {"threads": threads, "torch": torch.__version__, "side_by_side": []}

    if args.rounds:
        names = list(dict.fromkeys([*SIDE_BY_SIDE, *args.configurations]))
        results["summary"] = compare_configurations(args.reference_batch, args.rounds, args.steps, threads,
                                                    results["side_by_side"], names)

    results["optimised_batches"] = []
    for batch_size in args.batch_sizes:
        run = in_fresh_process(measure_training, "optimised", batch_size, args.steps, threads)
        results["optimised_batches"].append(run)
        logger.info("optimised batch %d: %.2f s/step, %.1f training cells/s, peak RSS %.0f MB", batch_size,
                    run["step_seconds"], batch_size / run["step_seconds"], run["peak_rss_mb"])

    results["encode"] = in_fresh_process(measure_encoding, args.encode_cells, args.encode_batch, threads)
    logger.info("encode: %.0f cells/s (batch %d), peak RSS %.0f MB", results["encode"]["cells_per_second"],
                args.encode_batch, results["encode"]["peak_rss_mb"])

    if args.compare_group_norm:
        results["group_norm"] = compare_group_norms(args.reference_batch, args.gn_steps, threads)

    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)
    return 0


def compare_group_norms(batch_size: int, steps: int, threads: int) -> dict[str, Any]:
    """Encoder speed of the group-norm variants (alternating, 3 rounds) and the loss curves of the two models
    ("chunk" = faithful, "torch" = nn.GroupNorm with 40 groups on layer 1) trained from one seed."""
    speed: dict[str, list[float]] = {variant: [] for variant in GROUP_NORM_VARIANTS}
    for _ in range(3):
        for variant in speed:
            speed[variant].append(in_fresh_process(measure_encoder, variant, batch_size, 5, threads)["encoder_seconds"])
    curves = {variant: in_fresh_process(measure_training, "optimised", 16, steps, threads, variant)["losses"]
              for variant in ("chunk", "torch")}
    final = {variant: curve[-1] for variant, curve in curves.items()}
    result = {"encoder_seconds": {k: statistics.median(v) for k, v in speed.items()}, "final_losses": final,
              "max_relative_difference": loss_differences(curves["torch"], curves["chunk"])}
    logger.info("group norm, encoder forward+backward at batch %d: %s", batch_size,
                ", ".join(f"{k} {v:.4f} s" for k, v in result["encoder_seconds"].items()))
    logger.info("group norm, losses after %d steps at batch 16: chunk %s | torch %s (largest step-wise relative "
                "difference %s)", steps + 1, _terms(final["chunk"]), _terms(final["torch"]),
                _terms(result["max_relative_difference"]))
    return result


if __name__ == "__main__":
    sys.exit(main())
