"""Image decoding and CLIP's preprocessing (PIL bicubic resize, centre crop, CLIP mean/std)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageLoadError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode -> RGB.

    Transparent pixels are composited onto `background` (their stored colour is often junk);
    16/32-bit greyscale is rescaled to 8 bits instead of being clipped; CMYK, palette and
    greyscale modes go through PIL's own conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if image.mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        if image.mode == "F" and lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size) arithmetic: shorter side to `size`, longer side truncated."""
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.BICUBIC)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def image_transform(size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """A callable PIL image -> (3, size, size) float32 tensor, as CLIP's preprocessing."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def transform(image: Image.Image) -> torch.Tensor:
        rgb = _center_crop(_resize_shorter(to_rgb(image), size), size)
        arr = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (arr.float().div(255.0) - mean) / std

    return transform


def load_image(path: str | Path, max_pixels: int = 178_956_970) -> Image.Image:
    """Decode an image fully (so truncation is caught here), first frame of animations."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file")
        with Image.open(path) as img:
            if img.size[0] * img.size[1] > max_pixels:
                raise ImageLoadError(path, f"image too large ({img.size[0]}x{img.size[1]} pixels)")
            img.seek(0)
            img.load()
            return img.copy()
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image or unsupported image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(path, f"corrupt or truncated image ({exc})") from None
