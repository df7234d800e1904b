"""ESResNeXt-fbsp: the audio head. A ResNeXt-50 (32x4d) trunk with five attention blocks, fed by the
FBSP spectrogram whose three frequency bands take the place of an image's colour planes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fbsp import LinearFBSP, filterbank_norm_loss, periodic_blackman_harris, power_spectrogram_db


class Bottleneck(nn.Module):
    """torchvision's ResNeXt bottleneck: the stride sits on the grouped 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 groups: int, base_width: int):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as the official blocks: one activation less to allocate
        return F.relu(out, inplace=True)


class Attention2d(nn.Module):
    """Max-pool to the target size, depthwise conv, pointwise conv, BN, sigmoid: a multiplicative mask."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 padding: tuple[int, int]):
        super().__init__()
        self.conv_depth = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.conv_point = nn.Conv2d(in_channels, out_channels, (1, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, size)
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(x))))


# (kernel, padding) of att1..att5, as published
_ATTENTION_SHAPES = [((3, 1), (1, 0)), ((1, 5), (0, 2)), ((3, 1), (1, 0)), ((1, 5), (0, 2)), ((3, 5), (1, 2))]


class ESResNeXtFBSP(nn.Module):
    """int16-scaled waveform (B, C, T) at 44.1 kHz -> (B, num_classes).

    Each channel runs through the trunk on its own; the pooled features are summed over channels
    and the final linear layer is applied once, as the official model does.
    """

    def __init__(self, num_classes: int = 1024, n_fft: int = 2048, hop_length: int = 561,
                 win_length: int = 1654, window: str = "blackmanharris", normalized: bool = True,
                 layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, groups: int = 32,
                 width_per_group: int = 4, apply_attention: bool = True):
        super().__init__()
        if window != "blackmanharris":
            raise ValueError(f"unsupported window {window!r}: AudioCLIP uses 'blackmanharris'")
        self.hop_length = hop_length
        self.normalized = normalized
        self.apply_attention = apply_attention
        self.register_buffer("window", periodic_blackman_harris(win_length))
        self.groups = groups
        self.base_width = width_per_group
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        exp = Bottleneck.expansion
        ins = [width, width * exp, width * 2 * exp, width * 4 * exp, width * 8 * exp]
        outs = [width * exp, width * 2 * exp, width * 4 * exp, width * 8 * exp, width * 8 * exp]
        for i in range(4):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", self._make_layer(width * 2**i, layers[i], stride))
            if apply_attention:
                kernel, padding = _ATTENTION_SHAPES[i]
                self.add_module(f"att{i + 1}", Attention2d(ins[i], outs[i], kernel, padding))
        if apply_attention:
            kernel, padding = _ATTENTION_SHAPES[4]
            self.att5 = Attention2d(ins[4], outs[4], kernel, padding)
        self.fc = nn.Linear(width * 8 * exp, num_classes)
        self.fbsp = LinearFBSP(n_fft // 2 + 1, normalized=normalized)
        self.last_filterbank: torch.Tensor | None = None

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, 1, None, self.groups, self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def n_fft(self) -> int:
        return (self.fbsp.out_features - 1) * 2

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """dB spectrogram (B, C, 3, 341, frames): the input planes of conv1."""
        # The front end stays float32 under autocast: its filters' arguments reach ~3200 rad and the
        # quiet bins of real audio depend on every bit (see model/fbsp.py).
        with torch.autocast(audio.device.type, enabled=False):
            filterbank = self.fbsp.filterbank(self.n_fft, torch.get_default_dtype(), audio.device)
            self.last_filterbank = filterbank
            return power_spectrogram_db(audio.float(), self.window.float(), filterbank, self.hop_length,
                                        self.conv1.in_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) spectrogram planes -> pooled (N, features)."""
        x = x.to(self.conv1.weight.dtype)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        for i in range(1, 5):
            layer = getattr(self, f"layer{i}")
            if self.apply_attention:
                mask = getattr(self, f"att{i}")
                x_in = x
                x = layer(x)
                x = x * mask(x_in, x.shape[-2:])
            else:
                x = layer(x)
        pooled = F.adaptive_avg_pool2d(x, (1, 1))
        if self.apply_attention:
            pooled = pooled * self.att5(x, pooled.shape[-2:])
        return torch.flatten(pooled, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        batch, channels = audio.shape[:2]
        spec = self.spectrogram(audio)
        pooled = self.features(spec.flatten(0, 1))
        summed = pooled.view(batch, channels, -1).sum(dim=1)
        return self.fc(summed)

    def loss_ttf(self) -> torch.Tensor:
        """The filterbank-norm regulariser of the last forward pass."""
        if self.last_filterbank is None:
            raise RuntimeError("loss_ttf needs an audio forward pass first")
        return filterbank_norm_loss(self.last_filterbank, self.normalized)
