"""Import the authors' AudioCLIP model code from a checkout, untouched, to run it beside ours.

The official repository (AndreyGuzhov/AudioCLIP, commit 45327aa) runs as-is for inference once
three things around it are arranged (shared/reference/README.md, "Running the official code beside
yours"): `utils/__init__.py` must not import the training datasets, `ignite_trainer` must offer
just its `AbstractNet`/`AbstractTransform` interfaces, and the BPE vocabulary (a Git-LFS pointer in
the repository) must sit at `assets/`. This module builds those surroundings in a temporary folder
of links to the checkout's own files, so the checkout is neither modified nor copied, and nothing
of it enters this repository. Used by benchmarks/encode_speed.py (`--official PATH`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
_TOP_LEVEL = ("model", "utils", "ignite_trainer", "termcolor")


class OfficialCodeError(RuntimeError):
    """The checkout cannot be imported; the message says what is missing."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _find_bpe(checkout: Path) -> Path:
    """The checkout's vocabulary if it is the real file, else the identical copy in open_clip's wheel."""
    own = checkout / "assets" / BPE_NAME
    if own.is_file() and own.stat().st_size > 1000 and _sha256(own) == BPE_SHA256:
        return own
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin:
        wheel = Path(spec.origin).parent / BPE_NAME
        if wheel.is_file() and _sha256(wheel) == BPE_SHA256:
            return wheel
    raise OfficialCodeError(
        f"{own} is a Git-LFS pointer and no identical copy was found (open_clip's wheel ships one)"
    )


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def build_surroundings(checkout: Path, folder: Path) -> None:
    """Lay out `folder` so that `import model.audioclip` runs the checkout's code unchanged."""
    for required in ("model/audioclip.py", "model/esresnet/fbsp.py", "utils/transforms.py",
                     "utils/simple_tokenizer.py", "ignite_trainer/_interfaces.py"):
        if not (checkout / required).is_file():
            raise OfficialCodeError(f"{checkout}: not an AudioCLIP checkout ({required} is missing)")
    _link(checkout / "model", folder / "model")
    _link(checkout / "utils" / "transforms.py", folder / "utils" / "transforms.py")
    _link(checkout / "utils" / "simple_tokenizer.py", folder / "utils" / "simple_tokenizer.py")
    (folder / "utils" / "__init__.py").write_text("from . import transforms\n")
    _link(checkout / "ignite_trainer" / "_interfaces.py", folder / "ignite_trainer" / "_interfaces.py")
    (folder / "ignite_trainer" / "__init__.py").write_text(
        "from ._interfaces import AbstractNet, AbstractTransform\n"
    )
    _link(_find_bpe(checkout), folder / "assets" / BPE_NAME)
    if importlib.util.find_spec("termcolor") is None:
        # model/esresnet/base.py imports termcolor only to colour two log lines.
        (folder / "termcolor.py").write_text("def colored(text, *args, **kwargs):\n    return text\n")


def load_official_class(checkout: str | Path) -> type:
    """The official `model.audioclip.AudioCLIP` class, imported from `checkout`."""
    checkout = Path(checkout).expanduser()
    clash = [name for name in _TOP_LEVEL[:3] if name in sys.modules]
    if clash:
        raise OfficialCodeError(f"top-level modules {clash} are already imported; run in a fresh process")
    folder = Path(tempfile.mkdtemp(prefix="official-audioclip-"))
    build_surroundings(checkout, folder)
    sys.path.insert(0, str(folder))
    try:
        module: ModuleType = importlib.import_module("model.audioclip")
    except ImportError as exc:
        raise OfficialCodeError(f"{checkout}: the official code does not import here ({exc})") from None
    finally:
        sys.path.remove(str(folder))
    return module.AudioCLIP


def official_model(checkout: str | Path, state_dict: dict) -> object:
    """The official AudioCLIP (pretrained=False, defaults) with `state_dict` loaded strictly, in eval."""
    model = load_official_class(checkout)(pretrained=False)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
