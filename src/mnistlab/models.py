"""The model registry. Every model maps normalised [N, 1, 28, 28] images to [N, K] logits, one
per class of its dataset (10 for digits, 26, 47 or 62 for EMNIST's letters and mixes); the loss
is cross-entropy and probabilities come from softmax.

Every model is `classifier(features(x))`: `features` maps images to flat vectors and `classifier`, a
module, maps those to logits. The few-shot fine-tune trains the classifier alone, on features
computed once (training.finetune)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import MnistlabError, first_line

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(cls):
        MODELS[name] = cls
        return cls
    return wrap


def build_model(name: str, num_classes: int = 10, **config) -> nn.Module:
    """Instantiate a registered model by name, with its config as keyword arguments.

    Settings that do not fit the model (unknown names, wrong types, widths that are not
    positive, sizes that leave nothing of a 28x28 image) are one sentence, not a traceback."""
    return _build(name, num_classes, config, probe=True)


def build_skeleton(name: str, num_classes: int, config: dict) -> nn.Module:
    """build_model without the tiny batch that checks the output's shape: for a skeleton on the meta
    device, whose first forward costs over a second of torch's set-up, and which needs only its shapes."""
    return _build(name, num_classes, config, probe=False)


def _build(name: str, num_classes: int, config: dict, probe: bool) -> nn.Module:
    if name not in MODELS:
        raise MnistlabError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}.")
    shown = json.dumps(config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns of zero-sized layers before they are refused below
            model = MODELS[name](num_classes=num_classes, **config)
        if any(p.numel() == 0 for p in model.parameters()):
            raise ValueError("a layer would have no units")
        if not probe:
            return model
        with torch.no_grad():  # one tiny batch through it, in eval mode so no statistic moves
            out = model.eval()(torch.zeros(2, 1, 28, 28))
        model.train()
    except MnistlabError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, IndexError) as e:
        raise MnistlabError(f"model '{name}' does not take the settings {shown} ({first_line(e, 160)}).") from None
    if out.shape != (2, num_classes):
        raise MnistlabError(f"model '{name}' with the settings {shown} gives outputs of shape "
                            f"{list(out.shape[1:])}, not [{num_classes}].")
    return model


@register("mlp")
class MLP(nn.Module):
    """The tutorial's five-layer perceptron: 784-512-256-128-64-10 with ReLU."""

    channels_last = False  # no convolutions: memory format does not matter

    def __init__(self, widths: tuple[int, ...] = (512, 256, 128, 64), num_classes: int = 10):
        super().__init__()
        sizes = [784, *widths]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    @property
    def features(self) -> nn.Module:
        return self.net[:-1]

    @property
    def classifier(self) -> nn.Module:
        return self.net[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("cnn")
class CNN(nn.Module):
    """The tutorial's small CNN: conv 1->10 k5, pool 2, ReLU, conv 10->20 k5, pool 2, ReLU, 320->10."""

    channels_last = True  # channels-last convolutions are faster on CPU (BENCHMARKS.md)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc = nn.Linear(320, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return F.relu(F.max_pool2d(self.conv2(x), 2)).flatten(1)

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _conv_pool_bn(c_in: int, c_out: int, k: int, padding: int = 0) -> list[nn.Module]:
    # pooling before batch norm and ReLU: both then touch a quarter of the values, which is
    # most of the step's time on a CPU for the first layer
    return [nn.Conv2d(c_in, c_out, k, padding=padding, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU()]


def _conv_bn(c_in: int, c_out: int, padding: int = 1, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@register("bn-cnn")
class BatchNormCNN(nn.Module):
    """Batch-normalised CNN, conv5-pool-BN-ReLU, conv3-pool-BN-ReLU, FC, FC: the fast and accurate presets'."""

    channels_last = True

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 256, num_classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(*_conv_pool_bn(1, c1, 5), *_conv_pool_bn(c1, c2, 3), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(c2 * 25, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("deep")
class DeepCNN(nn.Module):
    """VGG-style CNN: three blocks of two 3x3 conv-BN-ReLU (28 -> 14 -> 7 -> 3), then one linear layer.

    The `best` preset's model, with channels (48, 96, 192)."""

    channels_last = True

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), num_classes: int = 10):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            *_conv_bn(1, c1), *_conv_pool_bn(c1, c1, 3, padding=1),  # 28 -> 14
            *_conv_bn(c1, c2), *_conv_pool_bn(c2, c2, 3, padding=1),  # 14 -> 7
            *_conv_bn(c2, c3, padding=0), *_conv_bn(c3, c3, padding=0),  # 7 -> 5 -> 3
            nn.Flatten())
        self.classifier = nn.Linear(c3 * 9, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# An et al. 2020's three "simple models": ten 3x3, five 5x5 or four 7x7 unpadded convolutions
SIMPLE_CHANNELS = {3: (32, 48, 64, 80, 96, 112, 128, 144, 160, 176), 5: (32, 64, 96, 128, 160), 7: (48, 96, 144, 192)}


@register("simple")
class SimpleCNN(nn.Module):
    """Homogeneous CNN after An et al. 2020: unpadded conv-BN-ReLU of one kernel size (3, 5 or 7), linear+BN.

    Their "M3", "M5" and "M7": no pooling, so the three kernel sizes see digits at different
    scales and make different mistakes; ensemble members rather than a best single model."""

    channels_last = True

    def __init__(self, kernel: int = 5, channels: tuple[int, ...] | None = None, num_classes: int = 10):
        super().__init__()
        if channels is None and kernel not in SIMPLE_CHANNELS:
            raise MnistlabError(f"the simple model has default channels for kernels 3, 5 and 7, not {kernel}; "
                                "give 'channels' too.")
        channels = tuple(channels or SIMPLE_CHANNELS[kernel])
        size = 28 - len(channels) * (kernel - 1)
        if size < 1:
            raise MnistlabError(f"{len(channels)} unpadded {kernel}x{kernel} convolutions leave nothing of a "
                                "28x28 image; use fewer layers or a smaller kernel.")
        layers = [m for c_in, c_out in zip((1, *channels), channels)
                  for m in _conv_bn(c_in, c_out, padding=0, k=kernel)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(channels[-1] * size * size, num_classes, bias=False),
                                        nn.BatchNorm1d(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
