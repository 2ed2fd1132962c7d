"""Dataset sources as lazy streams of WebDataset samples, in a fixed, documented order.

Each ``open_*`` function checks its source before any work and returns a :class:`Source`:
the class names (None when only the data can tell), the number of items for a progress bar,
and an iterator of items. An item is either a sample dict (``__key__``, ``png`` bytes, ``cls``
class index as text, ``json`` bytes with ``source`` and ``marked``: false) or a
:class:`Rejected` record for input that cannot become a sample. Images follow the pixel rule
of :mod:`tasks.images`.

Orders: image folders by class name then relative path; IDX files in file order; tars in sorted
URL order, samples in stored order.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from radcore.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, parse_idx
from tasks import storage
from tasks.images import IMAGE_EXTENSIONS, BadImage, decode_image, encode_png, sanitize_key
from tasks.tario import iter_tar_samples

__all__ = [
    "Item",
    "Rejected",
    "Source",
    "make_sample",
    "open_idx",
    "open_image_folder",
    "open_webdataset",
    "tar_urls",
]

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_TAR_IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


@dataclass(frozen=True)
class Rejected:
    """Input that cannot become a sample: its would-be key (if any), where it is, and why."""

    key: str | None
    source: str
    reason: str


Item = dict[str, Any] | Rejected


class Source(NamedTuple):
    """An opened source: class names (None: derive from the data), item count, item stream."""

    classes: tuple[str, ...] | None
    total: int | None
    items: Iterator[Item]


def make_sample(key: str, png: bytes, cls: int, meta: dict[str, Any]) -> dict[str, Any]:
    """A shard sample; ``meta`` gets ``marked: false`` unless it says otherwise."""
    meta = {"marked": False, **meta}
    body = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return {"__key__": key, "png": png, "cls": str(int(cls)), "json": body.encode("ascii")}


# --- image folder: <root>/<class>/**/<file>.{jpg,jpeg,png,webp} ------------------------------


def open_image_folder(url: str) -> Source:
    """An image folder with one sub-folder per class (classes in sorted folder-name order).

    Files and folders whose name starts with ``.`` are skipped. Files directly under ``url``,
    non-image extensions, unreadable or undecodable images and empty class folders become
    :class:`Rejected` items. Keys are the path relative to ``url`` without its extension,
    sanitized (:func:`tasks.images.sanitize_key`).
    """
    storage.check_source(url)
    entries = [e for e in storage.listdir(url) if not e.name.startswith(".")]
    class_dirs = [e for e in entries if e.is_dir]
    if not class_dirs:
        raise ValueError(
            f"{url} has no class sub-folders: put each class's images in {url}/<class name>/"
        )
    classes = tuple(e.name for e in class_dirs)
    stray = [e for e in entries if not e.is_dir]
    files: list[tuple[int, str, str]] = []  # (class index, file URL, path relative to url)
    empty: list[str] = []
    for idx, folder in enumerate(class_dirs):
        prefix = folder.url.rstrip("/") + "/"
        found = [
            (idx, f, folder.name + "/" + f[len(prefix) :])
            for f in storage.find(folder.url)
            if not any(p.startswith(".") for p in f[len(prefix) :].split("/"))
        ]
        if not found:
            empty.append(folder.url)
        files.extend(found)
    return Source(classes, len(stray) + len(empty) + len(files), _folder_items(stray, empty, files))


def _folder_items(
    stray: Sequence[storage.Entry], empty: Sequence[str], files: Sequence[tuple[int, str, str]]
) -> Iterator[Item]:
    for e in stray:
        yield Rejected(None, e.url, "not inside a class folder: move it into <source>/<class>/")
    for folder in empty:
        yield Rejected(None, folder, "empty class folder: add images or remove the folder")
    for idx, file_url, rel in files:
        stem, ext = posixpath.splitext(rel)
        key = sanitize_key(stem)
        if ext.lower() not in IMAGE_EXTENSIONS:
            reason = f"not an image file (extension {ext!r}; radtrace reads {IMAGE_EXTENSIONS})"
            yield Rejected(key, file_url, reason)
            continue
        try:
            image = decode_image(storage.read_bytes(file_url))
        except BadImage as exc:
            yield Rejected(key, file_url, str(exc))
            continue
        except OSError as exc:
            yield Rejected(key, file_url, f"cannot read the file ({exc})")
            continue
        yield make_sample(key, encode_png(image), idx, {"source": file_url})


# --- IDX files (Fashion-MNIST layout) ---------------------------------------------------------


def _idx_url(folder: str, prefix: str, kind: str) -> str:
    names = [f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"]
    for name in names:
        if storage.exists(storage.join(folder, name)):
            return storage.join(folder, name)
    raise FileNotFoundError(
        f"{storage.join(folder, names[0])} not found: install Debian's dataset-fashion-mnist "
        "(`apt-get install dataset-fashion-mnist`) or pass the folder that holds the IDX files"
    )


def open_idx(
    url: str | None = None,
    split: str = "train",
    classes: Sequence[str] = FASHION_MNIST_CLASSES,
    limit: int | None = None,
    offset: int = 0,
) -> Source:
    """IDX image/label files (``train-images-idx3-ubyte[.gz]`` ...) in a folder ``url``.

    ``url`` defaults to the Debian Fashion-MNIST folder; ``split`` is "train" or "test" (file
    prefix ``t10k``); ``offset`` and ``limit`` keep samples ``offset .. offset + limit - 1``.
    Keys are ``<split>-000123`` (the index in the file); images are 8-bit gray.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    url = str(FASHION_MNIST_DIR) if url is None else url
    prefix = _IDX_PREFIX.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    storage.check_source(url)
    images_url = _idx_url(url, prefix, "images-idx3")
    labels_url = _idx_url(url, prefix, "labels-idx1")
    images = parse_idx(storage.read_bytes(images_url))
    labels = parse_idx(storage.read_bytes(labels_url))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_url}: expected N×H×W uint8 images, got {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{labels_url} holds {labels.shape} labels for {len(images)} images in {images_url}: "
            "use the label file of the same split"
        )
    end = len(images) if limit is None else min(offset + limit, len(images))
    if offset >= end:
        raise ValueError(f"offset {offset} leaves no sample of the {len(images)} in {images_url}")
    items = _idx_items(images, labels, range(offset, end), split, images_url, len(classes))
    return Source(tuple(classes), end - offset, items)


def _idx_items(
    images: np.ndarray, labels: np.ndarray, rows: range, split: str, source: str, n_classes: int
) -> Iterator[Item]:
    for i in rows:
        image, label = images[i], labels[i]
        key = f"{split}-{i:06d}"
        if not 0 <= int(label) < n_classes:
            yield Rejected(key, f"{source}#{i}", f"label {int(label)} outside 0..{n_classes - 1}")
            continue
        png = encode_png(Image.fromarray(np.ascontiguousarray(image)))
        yield make_sample(key, png, int(label), {"source": source, "index": i})


# --- existing WebDataset tars -----------------------------------------------------------------


def tar_urls(url: str | Sequence[str]) -> list[str]:
    """Resolve tar sources: a list of URLs, one ``.tar`` URL, a glob, or a folder (its *.tar)."""
    if not isinstance(url, str):
        urls = list(url)
    elif url.endswith(".tar") and not any(c in url for c in "*?["):
        urls = [url]
    elif any(c in url for c in "*?["):
        urls = storage.glob(url)
    else:
        storage.check_source(url)
        urls = storage.glob(storage.join(url, "*.tar"))
    if not urls:
        raise FileNotFoundError(f"no .tar shards found at {url}: check the URL or the pattern")
    for u in urls:
        storage.check_source(u)
    return sorted(urls)


def open_webdataset(url: str | Sequence[str]) -> Source:
    """Existing WebDataset tars, re-encoded to the pixel rule and re-sharded.

    Class names come from ``classes.json`` next to the first tar when present (else from the
    data). Each sample needs an image (``png``/``jpg``/``jpeg``/``webp``) and a ``cls``; its
    ``json`` is kept (``source`` defaults to ``<tar URL>#<key>``, ``marked`` to false). A tar
    that breaks part way yields a Rejected item and the samples read before the break.
    """
    urls = tar_urls(url)
    classes_url = storage.join(posixpath.dirname(urls[0]), "classes.json")
    classes = None
    if storage.exists(classes_url):
        names = json.loads(storage.read_bytes(classes_url))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"{classes_url} must hold a JSON list of class names: fix or delete it"
            )
        classes = tuple(names)
    return Source(classes, None, _tar_items(urls, None if classes is None else len(classes)))


def _tar_items(urls: Sequence[str], n_classes: int | None) -> Iterator[Item]:
    for url in urls:
        read = 0
        try:
            for sample in iter_tar_samples(url):
                read += 1
                yield _convert_tar_sample(sample, n_classes)
        except (tarfile.TarError, OSError, EOFError) as exc:
            reason = f"tar is corrupt or truncated after {read} samples ({exc}); rest skipped"
            yield Rejected(None, url, reason)


def _convert_tar_sample(sample: dict[str, Any], n_classes: int | None) -> Item:
    key, where = sample["__key__"], f"{sample['__url__']}#{sample['__key__']}"
    ext = next((e for e in _TAR_IMAGE_EXTS if e in sample), None)
    if ext is None:
        return Rejected(key, where, f"no image in the sample (one of {_TAR_IMAGE_EXTS} needed)")
    try:
        cls = int(bytes(sample.get("cls", b"")).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return Rejected(key, where, "missing or non-integer cls")
    if cls < 0 or (n_classes is not None and cls >= n_classes):
        return Rejected(key, where, f"cls {cls} outside the {n_classes} classes of classes.json")
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except (UnicodeDecodeError, ValueError):
        return Rejected(key, where, "json member is not valid JSON")
    if not isinstance(meta, dict):
        return Rejected(key, where, "json member is not a JSON object")
    meta.setdefault("source", where)
    try:
        image = decode_image(sample[ext])
    except BadImage as exc:
        return Rejected(key, where, str(exc))
    return make_sample(key, encode_png(image), cls, meta)
