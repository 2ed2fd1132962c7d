"""Decode any source image into radtrace's one pixel format and encode it as deterministic PNG.

The pixel rule (every shard image obeys it, whatever the source):

- 8 bits per channel; 1 channel (gray, PNG mode ``L``) or 3 (``RGB``). Nothing else.
- Gray stays gray: ``1`` (bilevel) and ``L`` become ``L``; 16-bit gray (``I;16*``, and ``I``
  read as 16-bit, clipped to 0..65535) is scaled to 8 bits by ``round(v * 255 / 65535)``.
- Palette images (``P``) become RGB; other colour modes (``CMYK``, ``YCbCr``, ...) become RGB
  through Pillow's conversion.
- Transparency (``LA``, ``PA``, ``RGBA``, or a ``transparency`` entry) is composited on white:
  ``round(c * a / 255 + 255 * (1 - a / 255))``; ``LA`` gives ``L``, the others ``RGB``.
- The EXIF orientation of the file is applied; colour profiles are ignored (values are kept as
  stored); an animated file gives its first frame.
- Any other mode (e.g. float ``F``) is refused with :class:`BadImage`, as are files Pillow cannot
  identify or fully decode (truncated or corrupt).

PNG output carries no metadata and uses a fixed zlib level, so equal pixels give equal bytes.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImage",
    "decode_image",
    "encode_png",
    "normalize_image",
    "sanitize_key",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
PNG_COMPRESS_LEVEL = 6
_GRAY16_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_RGB_MODES = {"P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


class BadImage(ValueError):
    """A source file that cannot become a shard image; the message says why."""


def _composite_on_white(arr: np.ndarray) -> np.ndarray:
    """H×W×(K+1) uint8 with alpha last -> H×W×K uint8 on a white background (exact rounding)."""
    color = arr[..., :-1].astype(np.uint32)
    alpha = arr[..., -1:].astype(np.uint32)
    out = (color * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def normalize_image(im: Image.Image) -> Image.Image:
    """Apply the module's pixel rule: an 8-bit ``L`` or ``RGB`` image (see the module docstring).

    Raises BadImage for a mode the rule does not cover.
    """
    mode = im.mode
    if "transparency" in im.info and mode in ("L", "P", "RGB"):
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    if mode == "L":
        return im.copy()
    if mode == "1":
        return im.convert("L")
    if mode in _GRAY16_MODES:
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8))
    if mode in _ALPHA_MODES:
        target = "LA" if mode in ("LA", "La") else "RGBA"
        arr = np.asarray(im.convert(target))
        out = _composite_on_white(arr)
        return Image.fromarray(out[..., 0] if target == "LA" else out)
    if mode in _RGB_MODES:
        try:
            return im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise BadImage(f"cannot convert pixel mode {mode!r} to RGB ({exc})") from exc
    raise BadImage(
        f"unsupported pixel mode {mode!r}: save the image as 8/16-bit gray, palette, RGB or RGBA"
    )


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes (any format Pillow reads) and apply the pixel rule.

    Raises BadImage for an empty, unidentifiable, truncated or corrupt file or an unsupported
    mode; the message says which.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            im.load()
            im = ImageOps.exif_transpose(im)
    except UnidentifiedImageError as exc:
        raise BadImage("not an image Pillow can identify") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"image too large ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"corrupt or truncated image ({exc})") from exc
    return normalize_image(im)


def encode_png(im: Image.Image) -> bytes:
    """Deterministic PNG bytes of an ``L`` or ``RGB`` image: no metadata, fixed zlib level."""
    if im.mode not in ("L", "RGB"):
        raise ValueError(f"encode_png takes L or RGB images, got {im.mode!r}: normalize it first")
    clean = Image.fromarray(np.asarray(im))  # a fresh image: no ICC, dpi or text chunks
    buf = io.BytesIO()
    clean.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key(relpath: str) -> str:
    """A WebDataset ``__key__`` from a ``/``-separated relative path without its extension.

    Each path component keeps ASCII letters, digits, ``_`` and ``-``; every other run of
    characters (dots included, since a dot would start the extension) becomes ``_``.
    """
    parts = [_UNSAFE.sub("_", p) for p in relpath.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"cannot derive a sample key from {relpath!r}: rename the file")
    return "/".join(parts)
