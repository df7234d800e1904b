"""Image preprocessing for every PIL mode, image decoding errors, and the tokenizer's edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from audioclip_search.errors import ImageLoadError
from audioclip_search.image import CLIP_MEAN, CLIP_STD, image_transform, load_image, to_rgb
from audioclip_search.text import format_labels, tokenize

from .conftest import REFERENCE, SHARED_DATA


def _pixel(tensor: torch.Tensor, y: int, x: int) -> np.ndarray:
    """Undo the normalisation at one pixel -> 0..255 RGB."""
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
    return (tensor[:, y, x].numpy() * std + mean) * 255


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "L", "1", "I;16", "I", "F", "CMYK"])
def test_every_mode_gives_a_3x224x224_tensor(mode):
    rgb = Image.new("RGB", (320, 240), (200, 40, 90))
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        img = Image.fromarray(np.full((240, 320), 30000 if mode != "F" else 0.5, dtype=dtype))
        assert img.mode == mode
    else:
        img = rgb.convert(mode)
    out = image_transform()(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    img = Image.fromarray(np.full((50, 50), 32768, dtype=np.uint16))
    assert img.mode == "I;16"
    assert to_rgb(img).getpixel((0, 0)) == (128, 128, 128)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (300, 300), (0, 0, 0, 0))  # fully transparent black
    img.paste((255, 0, 0, 255), (100, 100, 200, 200))
    out = image_transform()(img)
    np.testing.assert_allclose(_pixel(out, 5, 5), [255, 255, 255], atol=0.6)
    np.testing.assert_allclose(_pixel(out, 112, 112), [255, 0, 0], atol=0.6)


def test_palette_png_with_alpha_from_shared_data():
    png = next((SHARED_DATA / "tuxpaint-triples").rglob("*.png"))
    assert image_transform()(load_image(png)).shape == (3, 224, 224)


def test_cmyk_matches_pil_conversion():
    img = Image.new("RGB", (224, 224), (10, 120, 250)).convert("CMYK")
    out = image_transform()(img)
    np.testing.assert_allclose(_pixel(out, 100, 100), np.array(img.convert("RGB").getpixel((100, 100))), atol=0.6)


def test_resize_keeps_aspect_and_centre_crops():
    img = Image.new("RGB", (448, 224), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 112, 224))  # left quarter white: cropped away
    out = image_transform()(img)
    np.testing.assert_allclose(_pixel(out, 112, 2), [0, 0, 0], atol=0.6)


@pytest.mark.parametrize(("content", "reason"), [(b"", "empty file"), (b"not a picture at all", "not an image"),
                                                  (None, "truncated")])
def test_bad_images_raise_one_error_type(tmp_path, content, reason):
    path = tmp_path / "x.png"
    if content is None:
        good = (REFERENCE / "inputs" / "cat_1.jpg").read_bytes()
        path = tmp_path / "x.jpg"
        path.write_bytes(good[: len(good) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert err.value.path == str(path) and reason in err.value.reason and "\n" not in err.value.reason


def test_missing_image(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_tokenize_layout_and_truncation():
    ids = tokenize(["dog", "word " * 200])
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    assert ids[0, 0] == 49406 and ids[0, 2] == 49407 and ids[0, 3:].eq(0).all()
    assert ids[1, -1] == 49407  # cut to the context, still ending with EOT


def test_format_labels_joins_like_the_official_code():
    assert format_labels([["car horn", "thunder"], "dog"], "a {}") == ["a car horn, thunder", "a dog"]
