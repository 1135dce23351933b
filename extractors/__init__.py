"""AE-CFE feature extractor: RoI features (256x14x14) -> 50-d domain-aligned embedding.

* :mod:`~extractors.autoencoder` — :class:`AECFEAutoencoder` (encoder, feature decoder, image decoder) and
  :class:`AutoencoderConfig`; input scaling.
* :mod:`~extractors.losses` — alignment losses (mmd, kmmd, nd, adversarial, coral, none) and :class:`AECFELoss`.
* :mod:`~extractors.ssim` — SSIM and the (1 - SSIM) crop loss.
* :mod:`~extractors.trainer` — :class:`AutoencoderTrainer` (Adam, domain-balanced batches, checkpoints,
  resume, torchrun), :func:`encode_dataset`, :func:`load_autoencoder`.
"""
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig, ChunkGroupNorm, scale_roi_features
from extractors.losses import (AdversarialAlignment, AECFELoss, CORALLoss, KernelMMDLoss, MomentMatchingLoss,
                               NoAlignment, NormalAlignmentLoss, make_alignment_loss)
from extractors.ssim import SSIMLoss, ssim
from extractors.trainer import (AutoencoderTrainer, DomainBatchSampler, RoiCropDataset, TrainerConfig,
                                encode_dataset, load_autoencoder)

__all__ = [
    "AECFEAutoencoder", "AECFELoss", "AdversarialAlignment", "AutoencoderConfig", "AutoencoderTrainer",
    "CORALLoss", "ChunkGroupNorm", "DomainBatchSampler", "KernelMMDLoss", "MomentMatchingLoss", "NoAlignment",
    "NormalAlignmentLoss", "RoiCropDataset", "SSIMLoss", "TrainerConfig", "encode_dataset", "load_autoencoder",
    "make_alignment_loss", "scale_roi_features", "ssim",
]
