"""AudioCLIP: CLIP's image and text heads plus the ESResNeXt-fbsp audio head in one 1024-d space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .clip import LayerNorm, ModifiedResNet, Transformer, building_skeleton, causal_mask
from .config import AudioCLIPConfig, load_config
from .esresnext import ESResNeXtFBSP

Features = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]
Logits = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


class AudioCLIP(nn.Module):
    """The official AudioCLIP module layout: official checkpoints load with strict=True."""

    def __init__(self, config: AudioCLIPConfig | str | None = None):
        super().__init__()
        if config is None or isinstance(config, str):
            config = load_config(config or "audioclip-rn50")
        self.config = config
        c = config
        # Registration order reproduces the official state_dict order.
        self.visual = ModifiedResNet(
            layers=c.vision_layers,
            output_dim=c.embed_dim,
            heads=c.vision_heads,
            input_resolution=c.image_resolution,
            width=c.vision_width,
        )
        self.transformer = Transformer(c.transformer_width, c.transformer_layers, c.transformer_heads)
        skeleton = building_skeleton()
        self.token_embedding = nn.Embedding(
            c.vocab_size, c.transformer_width,
            _weight=torch.empty(c.vocab_size, c.transformer_width) if skeleton else None,
        )
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.transformer_width))
        self.ln_final = LayerNorm(c.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(c.transformer_width, c.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.audio = ESResNeXtFBSP(
            num_classes=c.embed_dim,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=c.window,
            normalized=c.normalized,
            layers=c.audio_layers,
            width=c.audio_width,
            groups=c.audio_groups,
            width_per_group=c.audio_width_per_group,
            apply_attention=c.apply_attention,
        )
        self.logit_scale_ai = nn.Parameter(torch.log(torch.ones([]) * 100))
        self.logit_scale_at = nn.Parameter(torch.log(torch.ones([]) * 100))
        if not skeleton:
            self._init_text_parameters()

    def _init_text_parameters(self) -> None:
        """CLIP's initialisation, so that a model trained from scratch starts where CLIP's did."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.config.transformer_width**-0.5)

    @property
    def device(self) -> torch.device:
        return self.visual.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, T) float at 44.1 kHz in int16 scale -> (B, embed_dim), not normalised."""
        if audio.dim() != 3:
            raise ValueError(f"audio must be (batch, channels, samples), got shape {tuple(audio.shape)}")
        return self.audio(audio.to(self.device))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) preprocessed -> (B, embed_dim), not normalised."""
        return self.visual(image.to(self.device).type(self.dtype))

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, 77) int64 token ids -> (B, embed_dim), not normalised; pooled at the EOT token."""
        token_ids = token_ids.to(self.device)
        eot_index = token_ids.argmax(dim=-1)  # EOT has the largest id
        # Under the causal mask no position attends to a later one, so the padding after the last
        # EOT cannot change any EOT output: running only up to it gives the same numbers, faster.
        length = int(eot_index.max()) + 1 if token_ids.numel() else token_ids.shape[1]
        x = self.token_embedding(token_ids[:, :length]).type(self.dtype)
        x = x + self.positional_embedding[:length].type(self.dtype)
        x = self.transformer(x, causal_mask(length, x.device))
        x = self.ln_final(x).type(self.dtype)
        eot = x[torch.arange(x.shape[0], device=x.device), eot_index]
        return eot @ self.text_projection

    def logit_scales(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(audio-image, audio-text, image-text) scales: exp of the parameters, clamped to [1, 100]."""
        return tuple(  # type: ignore[return-value]
            torch.clamp(p.exp(), min=1.0, max=100.0)
            for p in (self.logit_scale_ai, self.logit_scale_at, self.logit_scale)
        )

    def forward(
        self,
        audio: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> tuple[tuple[Features, Logits], torch.Tensor | None]:
        """((features, logits), loss) exactly as the official forward; text is token ids."""
        audio_f = image_f = text_f = None
        if audio is not None:
            audio_f = self.encode_audio(audio)
            audio_f = audio_f / audio_f.norm(dim=-1, keepdim=True)
        if image is not None:
            image_f = self.encode_image(image)
            image_f = image_f / image_f.norm(dim=-1, keepdim=True)
        if text is not None:
            text_f = self.encode_text(text)
            text_f = text_f / text_f.norm(dim=-1, keepdim=True)

        scale_ai, scale_at, scale_it = self.logit_scales()
        logits_ai = scale_ai * audio_f @ image_f.T if audio_f is not None and image_f is not None else None
        logits_at = scale_at * audio_f @ text_f.T if audio_f is not None and text_f is not None else None
        logits_it = scale_it * image_f @ text_f.T if image_f is not None and text_f is not None else None
        logits: Logits = (logits_ai, logits_at, logits_it)

        loss = contrastive_loss(logits)
        if audio is not None and loss is not None:
            loss = loss + self.audio.loss_ttf()
        return ((audio_f, image_f, text_f), logits), loss


def contrastive_loss(logits: Logits) -> torch.Tensor | None:
    """Symmetric cross-entropy summed over the modality pairs present, divided by (pairs)!.

    The official code divides by the factorial of the number of pairs (3 pairs -> 6), not by
    their count; checkpoints were trained with this scale, so it is kept.
    """
    present = [lg for lg in logits if lg is not None]
    if not present:
        return None
    reference = torch.arange(present[0].shape[0], dtype=torch.int64, device=present[0].device)
    loss = torch.zeros((), dtype=present[0].dtype, device=present[0].device)
    for lg in present:
        loss = loss + F.cross_entropy(lg, reference) + F.cross_entropy(lg.transpose(-1, -2), reference)
    return loss / math.factorial(len(present))
