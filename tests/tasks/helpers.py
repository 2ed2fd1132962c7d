"""Reusable test data for ``tasks/``: a tiny class-folder dataset, bad files, IDX bytes, uploads.

The expected pixels here follow the pixel rule of :mod:`tasks.images`, computed one pixel at a
time in plain Python (not with the module's NumPy code), so tests can use them as an oracle.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "FOLDER_CLASSES",
    "WrittenImage",
    "composite_on_white",
    "gray16_to_8",
    "idx_bytes",
    "image_bytes",
    "make_image_folder",
    "upload_tree",
    "write_bad_files",
]

FOLDER_CLASSES = ("ant", "cat", "dog")  # sorted; make_image_folder creates them out of order


@dataclass(frozen=True)
class WrittenImage:
    """One image file written by :func:`make_image_folder`.

    ``relpath`` is ``/``-separated and relative to the dataset root; ``key`` the sample key a
    source must derive from it; ``cls`` the index into :data:`FOLDER_CLASSES`; ``mode`` the
    Pillow mode saved; ``expected_mode`` ("L" or "RGB") and ``size`` (W, H) what decoding must
    give; ``expected`` the exact decoded pixels (H×W or H×W×3 uint8), None for lossy files.
    """

    relpath: str
    key: str
    cls: int
    mode: str
    expected_mode: str
    size: tuple[int, int]
    expected: np.ndarray | None


def composite_on_white(color: int, alpha: int) -> int:
    """The pixel rule's ``round(c * a / 255 + 255 * (1 - a / 255))`` for one channel value.

    Exact: the value is never a tie (k + 1/2 would need 2·n = 255·odd), so ``round`` is safe.
    """
    return round(color * alpha / 255 + 255 * (1 - alpha / 255))


def gray16_to_8(value: int) -> int:
    """The pixel rule's ``round(v * 255 / 65535)`` after clipping to 0..65535 (never a tie)."""
    return round(min(max(value, 0), 65535) * 255 / 65535)


def _reference(mode: str, arr: np.ndarray, palette: list[int] | None = None) -> np.ndarray:
    """Expected decoded pixels of ``arr`` saved in ``mode`` (pure Python, per pixel)."""
    h, w = arr.shape[:2]
    if mode == "L":
        return arr.astype(np.uint8).copy()
    if mode == "1":
        return np.array([[255 if arr[y, x] else 0 for x in range(w)] for y in range(h)], np.uint8)
    if mode == "I;16":
        rows = [[gray16_to_8(int(arr[y, x])) for x in range(w)] for y in range(h)]
        return np.array(rows, np.uint8)
    if mode == "LA":
        rows = [[composite_on_white(int(arr[y, x, 0]), int(arr[y, x, 1])) for x in range(w)]
                for y in range(h)]  # fmt: skip
        return np.array(rows, np.uint8)
    if mode == "RGB":
        return arr.astype(np.uint8).copy()
    if mode == "RGBA":
        rows = [[[composite_on_white(int(arr[y, x, c]), int(arr[y, x, 3])) for c in range(3)]
                 for x in range(w)] for y in range(h)]  # fmt: skip
        return np.array(rows, np.uint8)
    if mode == "P":
        assert palette is not None
        rows = [[palette[3 * int(arr[y, x]) : 3 * int(arr[y, x]) + 3] for x in range(w)]
                for y in range(h)]  # fmt: skip
        return np.array(rows, np.uint8)
    raise AssertionError(f"no reference for mode {mode}")


def _pil_image(mode: str, arr: np.ndarray, palette: list[int] | None = None) -> Image.Image:
    if mode == "1":
        return Image.fromarray(arr.astype(bool))
    size = (arr.shape[1], arr.shape[0])
    if mode == "I;16":
        return Image.frombytes("I;16", size, arr.astype("<u2").tobytes())
    im = Image.frombytes(mode, size, arr.astype(np.uint8).tobytes())
    if palette is not None:
        im.putpalette(palette)
    return im


def image_bytes(im: Image.Image, fmt: str, **save: object) -> bytes:
    """``im`` saved in format ``fmt`` (PNG, JPEG, WEBP, ...) as bytes."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


_WEBP_EXACT = {"lossless": True, "exact": True}  # keep colour under transparent pixels too
# (relative path, key, class index, mode, (W, H), format, save options, lossless)
_FOLDER_SPEC = [
    ("dog/rgb.webp", "dog/rgb", 2, "RGB", (8, 8), "WEBP", {"lossless": True}, True),
    ("dog/rgba.webp", "dog/rgba", 2, "RGBA", (8, 8), "WEBP", _WEBP_EXACT, True),
    ("dog/my photo.v2.png", "dog/my_photo_v2", 2, "RGB", (8, 5), "PNG", {}, True),
    ("ant/gray.png", "ant/gray", 0, "L", (8, 8), "PNG", {}, True),
    ("ant/gray16.png", "ant/gray16", 0, "I;16", (8, 8), "PNG", {}, True),
    ("ant/gray_alpha.png", "ant/gray_alpha", 0, "LA", (8, 8), "PNG", {}, True),
    ("ant/bilevel.png", "ant/bilevel", 0, "1", (8, 8), "PNG", {}, True),
    ("ant/gray_q90.jpg", "ant/gray_q90", 0, "L", (8, 8), "JPEG", {"quality": 90}, False),
    ("cat/palette.png", "cat/palette", 1, "P", (8, 8), "PNG", {}, True),
    ("cat/photo.JPG", "cat/photo", 1, "RGB", (8, 8), "JPEG", {"quality": 90}, False),
    ("cat/sub/rgba.png", "cat/sub/rgba", 1, "RGBA", (8, 8), "PNG", {}, True),
]
_CHANNELS = {"1": 0, "L": 0, "I;16": 0, "P": 0, "LA": 2, "RGB": 3, "RGBA": 4}
_PALETTE = [255, 0, 0, 0, 128, 0, 10, 20, 30, 250, 250, 240]  # 4 colours, indices 0..3


def _pixels(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    shape = (h, w) if _CHANNELS[mode] == 0 else (h, w, _CHANNELS[mode])
    if mode == "1":
        return rng.integers(0, 2, shape)
    if mode == "P":
        return rng.integers(0, 4, shape)
    if mode == "I;16":
        arr = rng.integers(0, 65536, shape)
        arr.flat[:6] = [0, 65535, 128, 129, 32767, 32768]  # edges and near-rounding values
        return arr
    arr = rng.integers(0, 256, shape)
    if mode in ("LA", "RGBA"):
        arr[..., -1].flat[:3] = [0, 255, 128]  # fully transparent, opaque, half
    return arr


def make_image_folder(root: Path) -> dict[str, WrittenImage]:
    """Write a tiny class-folder dataset under ``root`` (classes :data:`FOLDER_CLASSES`).

    Files are PNG, JPEG (``.jpg`` and ``.JPG``), and lossless WebP in modes L, 1, I;16, LA, P,
    RGB and RGBA, one in a nested sub-folder and one whose name needs sanitizing; all 8×8 except
    one 8 wide × 5 high. Returns the written images by relative path. Deterministic.
    """
    rng = np.random.default_rng(1234)
    out = {}
    for relpath, key, cls, mode, size, fmt, save, lossless in _FOLDER_SPEC:
        arr = _pixels(rng, mode, size)
        palette = _PALETTE if mode == "P" else None
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(_pil_image(mode, arr, palette), fmt, **save))
        expected_mode = "L" if mode in ("1", "L", "I;16", "LA") else "RGB"
        expected = _reference(mode, arr, palette) if lossless else None
        out[relpath] = WrittenImage(relpath, key, cls, mode, expected_mode, size, expected)
    return out


def write_bad_files(class_dir: Path) -> dict[str, str]:
    """Write files a source must reject into ``class_dir``.

    Returns their paths relative to ``class_dir.parent`` (the dataset root, ``/``-separated)
    mapped to a substring the rejection reason must contain: a truncated PNG, an empty ``.png``,
    a ``.txt`` file and a ``.jpg`` holding random bytes.
    """
    class_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(99)
    noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    png = image_bytes(Image.fromarray(noise), "PNG", compress_level=0)
    files = {
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "empty.png": (b"", "empty file"),
        "notes.txt": (b"class notes\n", "not an image file"),
        "random.jpg": (rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), "identify"),
    }
    out = {}
    for name, (data, reason) in files.items():
        (class_dir / name).write_bytes(data)
        out[f"{class_dir.name}/{name}"] = reason
    return out


def idx_bytes(arr: np.ndarray, *, compress: bool = False) -> bytes:
    """IDX file bytes of a uint8 array: magic ``0x0000 08 <ndim>`` and big-endian dimensions."""
    assert arr.dtype == np.uint8
    header = struct.pack(">I", 0x00000800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.tobytes()
    return gzip.compress(data, mtime=0) if compress else data


def upload_tree(root: Path, url: str) -> list[str]:
    """Copy every file under ``root`` to ``url`` (keeping relative paths); return their URLs."""
    from tasks import storage

    urls = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        target = storage.join(url, path.relative_to(root).as_posix())
        storage.write_bytes_atomic(target, path.read_bytes())
        urls.append(target)
    return urls
