"""What each stage trains: the modules, their losses, their initial weights and their validation.

* ``ClassifierTask`` (stage ``audio-head``): a standalone ``ESResNeXtFBSP`` with ``num_classes``
  outputs; multi-label BCE (summed over classes, averaged over the batch) or single-label CE,
  plus the FBSP filterbank-norm regulariser, as the official ESResNeXt-fbsp ``loss_fn``.
* ``ContrastiveTask`` (stages ``cooperative``, ``full``, ``finetune``): AudioCLIP's own loss
  (symmetric cross-entropy over the modality pairs present, divided by (pairs)!, plus
  ``audio.loss_ttf()``: exactly ``AudioCLIP.forward``'s loss). Heads that are not trained are
  frozen teachers: no gradients, kept in eval mode (their BatchNorm statistics do not move).

In mixed precision the FBSP spectrogram is computed in float32 (its kernel arguments reach
thousands of radians) and only the convolutional trunk runs under autocast.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model import AudioCLIP, contrastive_loss
from ..model.esresnext import ESResNeXtFBSP
from .config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["ClassifierTask", "ContrastiveTask", "audio_forward", "build_task", "head_parameters"]

TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def audio_forward(head: ESResNeXtFBSP, audio: torch.Tensor) -> torch.Tensor:
    """``head(audio)``, with the spectrogram kept in float32 when autocast is on."""
    device_type = audio.device.type
    if not torch.is_autocast_enabled(device_type):
        return head(audio)
    batch, channels = audio.shape[:2]
    with torch.autocast(device_type=device_type, enabled=False):
        spec = head.spectrogram(audio.float())
    pooled = head.features(spec.flatten(0, 1))
    return head.fc(pooled.view(batch, channels, -1).sum(dim=1))


def head_parameters(model: AudioCLIP, head: str) -> list[tuple[str, nn.Parameter]]:
    """The named parameters of one head of AudioCLIP (logit scales excluded)."""
    prefixes = {"audio": ("audio.",), "image": ("visual.",), "text": TEXT_PREFIXES}[head]
    return [(name, p) for name, p in model.named_parameters() if name.startswith(prefixes)]


def _set_fbsp_trainable(head: ESResNeXtFBSP, train_fbsp: bool) -> None:
    fbsp = head.fbsp
    for p in (fbsp.m, fbsp.fb, fbsp.fc):
        p.requires_grad_(train_fbsp and p.requires_grad)
    # The official layer keeps an empty, unused bias in its state dict; it never gets a gradient.
    fbsp.bias.requires_grad_(False)


class ClassifierTask(nn.Module):
    """The standalone audio head with its classification loss."""

    def __init__(self, head: ESResNeXtFBSP, multilabel: bool, class_names: list[str]):
        super().__init__()
        self.head = head
        self.multilabel = multilabel
        self.class_names = list(class_names)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, target.to(logits), reduction="sum") / logits.shape[0]
        else:
            loss = F.cross_entropy(logits, target)
        return loss + self.head.loss_ttf()

    def forward(self, audio: torch.Tensor, target: torch.Tensor | None = None, **_: Any
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits = audio_forward(self.head, audio)
        loss = self.loss(logits, target) if target is not None else None
        return loss, logits


class ContrastiveTask(nn.Module):
    """AudioCLIP with some heads trained and the rest frozen as teachers."""

    def __init__(self, model: AudioCLIP, trained: list[str], use_image: bool, use_text: bool,
                 train_logit_scales: bool = True, train_fbsp: bool = True):
        super().__init__()
        self.model = model
        self.trained = set(trained)
        self.use_image = use_image
        self.use_text = use_text
        for p in model.parameters():
            p.requires_grad_(False)
        used = {"audio": True, "image": use_image, "text": use_text}
        self.trained = {h for h in self.trained if used[h]}  # a head without its data cannot learn
        for head in self.trained:
            for _, p in head_parameters(model, head):
                p.requires_grad_(True)
        _set_fbsp_trainable(model.audio, train_fbsp and "audio" in self.trained)
        if train_logit_scales:
            pairs = [("logit_scale_ai", "audio", "image", use_image),
                     ("logit_scale_at", "audio", "text", use_text),
                     ("logit_scale", "image", "text", use_image and use_text)]
            for name, a, b, present in pairs:
                if present and (a in self.trained or b in self.trained):
                    getattr(model, name).requires_grad_(True)
        self._apply_frozen_modes()

    def _frozen_modules(self) -> list[nn.Module]:
        out: list[nn.Module] = []
        if "image" not in self.trained:
            out.append(self.model.visual)
        if "text" not in self.trained:
            out += [self.model.transformer, self.model.ln_final]
        if "audio" not in self.trained:
            out.append(self.model.audio)
        return out

    def _apply_frozen_modes(self) -> None:
        for m in self._frozen_modules():
            m.eval()

    def train(self, mode: bool = True) -> ContrastiveTask:
        super().train(mode)
        self._apply_frozen_modes()
        return self

    def _encode(self, head: str, fn: Any, x: torch.Tensor) -> torch.Tensor:
        if head in self.trained:
            f = fn(x)
        else:
            with torch.no_grad():
                f = fn(x)
        f = f.float()
        return f / f.norm(dim=-1, keepdim=True)

    def features(self, audio: torch.Tensor | None = None, image: torch.Tensor | None = None,
                 tokens: torch.Tensor | None = None) -> tuple[torch.Tensor | None, ...]:
        m = self.model
        audio_f = self._encode("audio", lambda x: audio_forward(m.audio, x.to(m.device)), audio) \
            if audio is not None else None
        image_f = self._encode("image", m.encode_image, image) if image is not None and self.use_image else None
        text_f = self._encode("text", m.encode_text, tokens) if tokens is not None and self.use_text else None
        return audio_f, image_f, text_f

    def logits(self, audio_f: torch.Tensor | None, image_f: torch.Tensor | None, text_f: torch.Tensor | None
               ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        scale_ai, scale_at, scale_it = self.model.logit_scales()
        logits_ai = scale_ai * audio_f @ image_f.T if audio_f is not None and image_f is not None else None
        logits_at = scale_at * audio_f @ text_f.T if audio_f is not None and text_f is not None else None
        logits_it = scale_it * image_f @ text_f.T if image_f is not None and text_f is not None else None
        return logits_ai, logits_at, logits_it

    def forward(self, audio: torch.Tensor, image: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                **_: Any) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        feats = self.features(audio, image, tokens)
        logits = self.logits(*feats)
        loss = contrastive_loss(logits)
        if loss is None:
            raise ValueError("the contrastive loss needs two modalities: audio with text and/or images")
        loss = loss + self.model.audio.loss_ttf()
        return loss, feats


# ---------------------------------------------------------------------------------------------
# building


def _is_audio_head_source(name_or_path: str) -> bool:
    """Whether an init source holds only the audio head (registry kind, or the keys of a file)."""
    from pathlib import Path

    from ..checkpoints import REGISTRY, read_checkpoint

    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path].kind == "audio-head"
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        return False
    ckpt = read_checkpoint(path)
    return not any(k.startswith(("audio.", "visual.", "transformer.")) for k in ckpt.state_dict)


def _load_audioclip(config: TrainConfig) -> AudioCLIP:
    from pathlib import Path

    from ..checkpoints import REGISTRY, load_audio_head, load_model, read_checkpoint

    init = config.model.init
    arch = config.model.arch
    if init == "none":
        model = AudioCLIP(arch)
    elif _is_audio_head_source(init):
        model = AudioCLIP(arch)
        report = load_audio_head(model, init)
        logger.warning("init %s holds the audio head only: the image and text heads start from random weights "
                       "(for CLIP teachers use model.init=audioclip-partial with model.init_audio=%s)", init, init)
        logger.info("init: %s", report)
    else:
        file_arch = None
        if init not in REGISTRY:
            ckpt = read_checkpoint(Path(init).expanduser())
            file_arch = ckpt.config or ckpt.arch
        # The checkpoint's own architecture wins where it states one; otherwise model.arch.
        model = load_model(init, device="cpu", arch=None if (file_arch or init in REGISTRY) else arch)
        if model.config.name != arch:
            logger.warning("init %s is a %s model; using that architecture instead of model.arch=%s",
                           init, model.config.name, arch)
    if config.model.init_audio:
        report = load_audio_head(model, config.model.init_audio)
        logger.info("init_audio: %s", report)
    return model


def build_classifier(config: TrainConfig, class_names: list[str], multilabel: bool) -> ClassifierTask:
    from ..checkpoints import load_audio_head
    from ..model import load_config

    arch = load_config(config.model.arch)
    num_classes = config.model.num_classes or len(class_names)
    if num_classes < 1:
        raise ValueError("the audio-head stage needs labels: no class names found in the data")
    head = ESResNeXtFBSP(
        num_classes=num_classes, n_fft=arch.n_fft, hop_length=arch.hop_length, win_length=arch.win_length,
        window=arch.window, normalized=arch.normalized, layers=arch.audio_layers, width=arch.audio_width,
        groups=arch.audio_groups, width_per_group=arch.audio_width_per_group, apply_attention=arch.apply_attention,
    )
    for source in (config.model.init, config.model.init_audio):
        if source and source != "none":
            report = load_audio_head(head, source)
            logger.info("init: %s", report)
    _set_fbsp_trainable(head, config.model.train_fbsp)
    return ClassifierTask(head, multilabel, class_names)


def build_task(config: TrainConfig, class_names: list[str], multilabel: bool, use_image: bool,
               use_text: bool) -> ClassifierTask | ContrastiveTask:
    """The stage's module with its initial weights (on CPU); parameters not trained have no grad."""
    if config.stage == "audio-head":
        return build_classifier(config, class_names, multilabel)
    model = _load_audioclip(config)
    return ContrastiveTask(model, config.trained_heads(), use_image=use_image, use_text=use_text,
                           train_logit_scales=config.model.train_logit_scales, train_fbsp=config.model.train_fbsp)
