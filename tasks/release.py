"""Marked releases: mark a stratified fraction of a shard folder and publish it with a manifest.

A release of the shard folder ``source`` (made by :func:`tasks.shards.shard_source`) is a folder
``out`` holding, for every source shard, a release shard of the same name with the same samples
in the same order (marked or not), plus:

- ``_receipts/<shard>.json``: written right after its shard; sample count, SHA-256, number
  marked, quality figures of the marked images, and the digest of the plan it belongs to. A
  rerun skips every shard whose receipt matches its plan and whose bytes match the receipt.
- ``quarantine.jsonl``: samples of the source shards that could not be decoded (dropped).
- ``manifest.json`` last (see :func:`write_manifest`): a release without one is incomplete.

Which samples are marked: per class c, ``round(q · n_c)`` samples (half up), spread over the
shards by largest remainder. Inside a shard, ``selection="hard"`` takes the images of the class
that the marker's own classifier finds hardest (highest cross-entropy on their label): a trainer
fits those last, with the least help from natural features, and that is where it picks up the
carrier (measured in bench/scratch/2026-12-04/hardsel.py: at 40 dB the black-box log10 p of
a from-scratch suspect went from -0.3 with a random 10% to -3.1). ``skip_hardest`` (default 0.02)
passes over that share of the class at the very top of the ranking (often ambiguous or
mislabelled images): with pattern marks, marking from the very top cost a suspect 0.5-1.2
points of accuracy against its control, skipping the top 2% at most 0.8, for a somewhat weaker
trace (README, "What `make demo` does"). ``"random"`` takes those with
the smallest HMAC-SHA256 of their key under a secret derived from the carriers (ties of
``"hard"`` are broken the same way); ``"auto"`` (the default) is ``"hard"`` when the marker is a
classifier of the dataset's classes, else ``"random"``. Under H0 the audited model never saw the
release, so how the marked images were chosen cannot bias the tests. The published samples'
``json`` does not say which samples were marked.
Marking is deterministic: the random draws of each batch are seeded from the same secret, the
shard name and the batch number, so a redone shard gets the same bytes on the same hardware.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from PIL import Image

from radcore.carriers import Carriers
from radcore.mark import MarkConfig, mark
from radcore.markers import Marker
from radcore.quality import ssim
from tasks import storage
from tasks.images import encode_png
from tasks.shards import ShardIndex, dumps, read_index
from tasks.tario import iter_tar_samples, write_shard

__all__ = [
    "MANIFEST_FORMAT",
    "RECEIPTS",
    "Receipt",
    "ReleaseConfig",
    "ReleasePlan",
    "ShardTask",
    "allocate_quotas",
    "plan_release",
    "release",
    "release_shard",
    "selection_secret",
    "write_manifest",
]

MANIFEST_FORMAT = "radtrace-release/1"
RECEIPT_FORMAT = "radtrace-receipt/1"
RECEIPTS = "_receipts"
SELECTIONS = ("auto", "hard", "random")
PSNR_BIN_EDGES = tuple(float(e) for e in range(30, 61))  # 1 dB bins, 30..60 dB


# The share of each class passed over at the top of the hard ranking (module docstring).
SKIP_HARDEST = 0.02


@dataclass(frozen=True)
class ReleaseConfig:
    """fraction: share of each class to mark, in [0, 1]. batch_size: images per mark() call.
    selection: which images of a class are marked, "auto", "hard" or "random" (module docstring).
    skip_hardest: with hard selection, the share of each class (per shard) passed over at the
    top of the ranking before the marked ones are taken (module docstring).
    """

    fraction: float = 0.1
    mark: MarkConfig = field(default_factory=MarkConfig)
    batch_size: int = 250
    selection: str = "auto"
    skip_hardest: float = SKIP_HARDEST

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(
                f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}"
            )
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(
                f"fraction must be in [0, 1] (e.g. 0.1 marks 10%), got {self.fraction}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.skip_hardest < 1.0:
            raise ValueError(f"skip_hardest must be in [0, 1), got {self.skip_hardest}")


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: everything a worker needs except the carriers and the marker."""

    source: str  # source shard folder URL
    release: str  # release folder URL
    name: str  # shard file name, the same in both folders
    quota: tuple[int, ...]  # samples to mark per class index in this shard
    cfg: ReleaseConfig
    carrier_fingerprint: str
    marker_id: str
    plan_digest: str


@dataclass(frozen=True)
class ReleasePlan:
    """The whole release: source index, destination, config and per-shard quotas."""

    index: ShardIndex
    out: str
    cfg: ReleaseConfig
    carrier_fingerprint: str
    marker_id: str
    quotas: tuple[tuple[int, ...], ...]  # per shard, per class
    digest: str

    def tasks(self) -> list[ShardTask]:
        return [
            ShardTask(
                self.index.url,
                self.out,
                info.name,
                quota,
                self.cfg,
                self.carrier_fingerprint,
                self.marker_id,
                self.digest,
            )
            for info, quota in zip(self.index.shards, self.quotas, strict=True)
        ]


@dataclass(frozen=True)
class Receipt:
    """What a finished release shard left behind (``_receipts/<name>.json``)."""

    name: str
    count: int
    sha256: str
    marked: int
    plan_digest: str
    psnr: tuple[float, ...]  # per marked image, dB, in stored order
    ssim: tuple[float, ...]
    shift_own_sum: float
    shift_other_sum: float
    quarantine: tuple[dict[str, Any], ...]
    mark_seconds: float  # time spent inside radcore.mark
    total_seconds: float  # read + decode + mark + encode + write

    def to_json(self) -> dict[str, Any]:
        return {"format": RECEIPT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Receipt:
        if raw.get("format") != RECEIPT_FORMAT:
            raise ValueError(f"not a radtrace receipt (format {raw.get('format')!r})")
        fields = {k: v for k, v in raw.items() if k != "format"}
        for k in ("psnr", "ssim", "quarantine"):
            fields[k] = tuple(fields[k])
        return cls(**fields)


def selection_secret(carriers: Carriers) -> bytes:
    """A key derived from the carrier values (not from their published fingerprint)."""
    raw = carriers.vectors.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hmac.new(raw, b"radtrace selection key v1", hashlib.sha256).digest()


def _score(secret: bytes, key: str) -> bytes:
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).digest()


def allocate_quotas(
    class_counts: Sequence[Sequence[int]], fraction: float
) -> tuple[tuple[int, ...], ...]:
    """Per shard and class, how many samples to mark so that each class gets round(q · n_c).

    class_counts[s][c]: samples of class c in shard s. Each shard gets floor(q · n_sc); the
    remaining marks of a class go to the shards with the largest fractional parts (ties: lower
    shard index). The fraction is taken as its decimal value (0.1 is exactly a tenth).
    """
    q = Fraction(str(fraction))
    n_shards = len(class_counts)
    n_classes = len(class_counts[0]) if n_shards else 0
    out = [[0] * n_classes for _ in range(n_shards)]
    for c in range(n_classes):
        exact = [q * class_counts[s][c] for s in range(n_shards)]
        total = math.floor(sum(exact) + Fraction(1, 2))
        for s in range(n_shards):
            out[s][c] = math.floor(exact[s])
        rest = total - sum(out[s][c] for s in range(n_shards))
        order = sorted(range(n_shards), key=lambda s: (-(exact[s] - out[s][c]), s))
        for s in order[:rest]:
            out[s][c] += 1
    return tuple(tuple(row) for row in out)


def _read_manifest(out: str) -> dict[str, Any] | None:
    url = storage.join(out, "manifest.json")
    return json.loads(storage.read_bytes(url)) if storage.exists(url) else None


def plan_release(
    source: str, out: str, carriers: Carriers, marker: Marker, cfg: ReleaseConfig
) -> ReleasePlan:
    """Check everything that can be checked before work starts, and plan the shards."""
    index = read_index(source)
    if carriers.num_classes != len(index.classes):
        raise ValueError(
            f"the carriers have {carriers.num_classes} classes but {source} has "
            f"{len(index.classes)}: draw carriers with one vector per class"
        )
    if carriers.dim != marker.dim:
        raise ValueError(
            f"the carriers live in R^{carriers.dim} but marker {marker.marker_id} gives "
            f"{marker.dim} features: draw carriers for this marker"
        )
    storage.check_destination(out)
    cfg = replace(cfg, selection=resolve_selection(cfg.selection, marker, len(index.classes)))
    quotas = allocate_quotas([s.class_counts for s in index.shards], cfg.fraction)
    digest = hashlib.sha256(
        dumps(
            {
                "source_index": index.to_json(),
                "carriers": carriers.fingerprint,
                "marker": marker.marker_id,
                "cfg": asdict(cfg),
                "quotas": quotas,
            }
        )
    ).hexdigest()
    _remove_stale_temporaries(out)
    existing = _read_manifest(out)
    if existing is not None and existing.get("plan_digest") != digest:
        raise FileExistsError(
            f"{out} already holds a different finished release (manifest.json): choose another "
            "destination or delete that one"
        )
    return ReleasePlan(index, out, cfg, carriers.fingerprint, marker.marker_id, quotas, digest)


def resolve_selection(selection: str, marker: Marker, num_classes: int) -> str:
    """ "auto" -> "hard" when the marker classifies these classes, else "random"."""
    can_rank = marker.num_classes == num_classes
    if selection == "hard" and not can_rank:
        raise ValueError(
            f"selection 'hard' ranks images with the marker's classifier, but marker "
            f"{marker.marker_id} is not a classifier of the {num_classes} classes "
            f"(outputs: {marker.num_classes or 'features only'}): use a marker trained on "
            "these classes, or selection 'random'"
        )
    if selection == "auto":
        return "hard" if can_rank else "random"
    return selection


def _remove_stale_temporaries(out: str) -> None:
    """Delete the temporary files of local atomic writes that a killed run left behind."""
    if storage.scheme(out) == "s3":
        return  # S3 writes are single puts: nothing half-written is ever visible
    for folder in (out, storage.join(out, RECEIPTS)):
        if storage.isdir(folder):
            for entry in storage.listdir(folder):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    storage.remove(entry.url)


def _receipt_url(task: ShardTask) -> str:
    return storage.join(task.release, RECEIPTS, task.name + ".json")


def _finished(task: ShardTask) -> Receipt | None:
    """The shard's receipt if it belongs to this plan and the shard's bytes match it."""
    url = _receipt_url(task)
    shard = storage.join(task.release, task.name)
    if not (storage.exists(url) and storage.exists(shard)):
        return None
    try:
        receipt = Receipt.from_json(json.loads(storage.read_bytes(url)))
    except (ValueError, TypeError, KeyError):
        return None  # a damaged receipt: redo the shard
    if receipt.plan_digest != task.plan_digest:
        return None
    if hashlib.sha256(storage.read_bytes(shard)).hexdigest() != receipt.sha256:
        return None
    return receipt


def _decode(png: bytes) -> np.ndarray:
    """PNG bytes -> C×H×W uint8 (C = 1 for gray, 3 for RGB)."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        if im.mode not in ("L", "RGB"):
            raise ValueError(f"pixel mode {im.mode!r}; shards hold L or RGB")
        arr = np.asarray(im)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _pick(
    keys_by_class: dict[int, list[str]],
    quota: Sequence[int],
    secret: bytes,
    difficulty: dict[str, float] | None = None,
    skip: float = 0.0,
) -> set[str]:
    """Per class, the ``quota`` keys with the highest difficulty (when given) after passing
    over the ``skip`` share of the class at the top (taken last, least hard first, when the
    rest is too few); ties and the random selection by the smallest HMAC score."""
    picked: set[str] = set()
    for c, keys in keys_by_class.items():
        want = quota[c] if c < len(quota) else 0
        if want == 0:
            continue
        if difficulty is None:
            order = sorted(keys, key=lambda k: _score(secret, k))
        else:
            order = sorted(keys, key=lambda k: (-difficulty[k], _score(secret, k)))
            top = math.floor(skip * len(order) + 0.5)
            order = order[top:] + order[:top][::-1]
        picked.update(order[:want])
    return picked


def _shape_batches(
    keys: Sequence[str], pixels: dict[str, np.ndarray], batch_size: int
) -> Iterator[list[str]]:
    """``keys`` in batches of one image shape (a batch is one tensor), in their given order."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for k in keys:
        by_shape.setdefault(pixels[k].shape, []).append(k)
    for group in by_shape.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


def _difficulty(
    keys: Sequence[str],
    cls_of: dict[str, int],
    pixels: dict[str, np.ndarray],
    marker: Marker,
    device: str | torch.device,
) -> dict[str, float]:
    """Cross-entropy of the marker's classifier on each image's own label, rounded to 1e-6 so
    that last-bit differences between runs do not reorder the ranking of a redone shard."""
    out: dict[str, float] = {}
    for chunk in _shape_batches(keys, pixels, 500):
        x = torch.from_numpy(np.stack([pixels[k] for k in chunk])).to(device)
        logp = marker.class_log_probs(x.float() / 255.0).cpu()
        labels = torch.tensor([cls_of[k] for k in chunk])
        loss = -logp.gather(1, labels[:, None]).squeeze(1)
        out.update((k, round(float(v), 6)) for k, v in zip(chunk, loss, strict=True))
    return out


def _seed(secret: bytes, name: str, batch: int) -> int:
    digest = hmac.new(secret, f"seed:{name}:{batch}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def release_shard(
    task: ShardTask, carriers: Carriers, marker: Marker, device: str | torch.device = "cpu"
) -> Receipt:
    """Write one release shard and its receipt (or return the receipt if already done)."""
    if carriers.fingerprint != task.carrier_fingerprint or marker.marker_id != task.marker_id:
        raise ValueError(
            f"shard {task.name} was planned with carriers {task.carrier_fingerprint[:16]}… and "
            f"marker {task.marker_id}: pass those (got {carriers.fingerprint[:16]}…, "
            f"{marker.marker_id})"
        )
    done = _finished(task)
    if done is not None:
        return done
    start = time.perf_counter()
    secret = selection_secret(carriers)
    samples, pixels, quarantine = [], {}, []
    keys_by_class: dict[int, list[str]] = {}
    cls_of: dict[str, int] = {}
    for sample in iter_tar_samples(storage.join(task.source, task.name)):
        key = sample["__key__"]
        try:
            pixels[key] = _decode(sample["png"])
            cls = int(sample["cls"])
        except (KeyError, ValueError, OSError) as exc:
            quarantine.append({"key": key, "source": task.name, "reason": f"undecodable: {exc}"})
            continue
        samples.append(sample)
        keys_by_class.setdefault(cls, []).append(key)
        cls_of[key] = cls
    marker = marker.to(device)
    difficulty = None
    if resolve_selection(task.cfg.selection, marker, len(task.quota)) == "hard":
        # Only classes that get marks in this shard need ranking.
        ranked = [
            k
            for c, ks in keys_by_class.items()
            if c < len(task.quota) and task.quota[c]
            for k in ks
        ]
        difficulty = _difficulty(ranked, cls_of, pixels, marker, device)
    picked = _pick(keys_by_class, task.quota, secret, difficulty, task.cfg.skip_hardest)

    # Mark in batches of one image shape, in stored order.
    todo = [s["__key__"] for s in samples if s["__key__"] in picked]
    marked_png: dict[str, bytes] = {}
    psnr_vals, ssim_vals, own_sum, other_sum, mark_seconds = [], [], 0.0, 0.0, 0.0
    for batch_no, chunk in enumerate(_shape_batches(todo, pixels, task.cfg.batch_size)):
        x = torch.from_numpy(np.stack([pixels[k] for k in chunk])).to(device)
        y = torch.tensor([cls_of[k] for k in chunk])
        gen = torch.Generator().manual_seed(_seed(secret, task.name, batch_no))
        t0 = time.perf_counter()
        result = mark(x, y, carriers, marker, task.cfg.mark, gen)
        mark_seconds += time.perf_counter() - t0
        out = result.images.cpu()
        for k, img in zip(chunk, out.numpy(), strict=True):
            arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            marked_png[k] = encode_png(Image.fromarray(np.ascontiguousarray(arr)))
        psnr_vals += [round(float(v), 4) for v in result.psnr]
        ssim_vals += [round(float(v), 6) for v in ssim(x.cpu(), out)]
        own_sum += float(result.shift_own.sum())
        other_sum += float(result.shift_other.sum())

    released = (_public_sample(s, marked_png.get(s["__key__"])) for s in samples)
    count, sha = write_shard(storage.join(task.release, task.name), released)
    receipt = Receipt(
        name=task.name,
        count=count,
        sha256=sha,
        marked=len(marked_png),
        plan_digest=task.plan_digest,
        psnr=tuple(psnr_vals),
        ssim=tuple(ssim_vals),
        shift_own_sum=own_sum,
        shift_other_sum=other_sum,
        quarantine=tuple(quarantine),
        mark_seconds=round(mark_seconds, 4),
        total_seconds=round(time.perf_counter() - start, 4),
    )
    storage.write_bytes_atomic(_receipt_url(task), dumps(receipt.to_json()))
    return receipt


def _public_sample(sample: dict[str, Any], marked_png: bytes | None) -> dict[str, Any]:
    """The released form: same key and class, marked pixels when picked, no marking flag."""
    meta = json.loads(sample["json"]) if "json" in sample else {}
    meta.pop("marked", None)
    body = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    png = sample["png"] if marked_png is None else marked_png
    return {"__key__": sample["__key__"], "png": png, "cls": sample["cls"], "json": body}


def _quality(receipts: Sequence[Receipt], shifts_measured: bool = True) -> dict[str, Any]:
    """Quality figures of the marked images; the feature shifts are None for pattern marks,
    which do not measure them."""
    psnr = np.array([v for r in receipts for v in r.psnr], dtype=np.float64)
    ssim_v = np.array([v for r in receipts for v in r.ssim], dtype=np.float64)
    n = len(psnr)
    if n == 0:
        return {"num_marked": 0}
    finite = psnr[np.isfinite(psnr)]
    counts, _ = np.histogram(np.clip(finite, PSNR_BIN_EDGES[0], PSNR_BIN_EDGES[-1]), PSNR_BIN_EDGES)
    return {
        "num_marked": n,
        "psnr_mean": round(float(finite.mean()), 4) if len(finite) else None,
        "psnr_min": round(float(psnr.min()), 4),
        "ssim_mean": round(float(ssim_v.mean()), 6),
        "ssim_min": round(float(ssim_v.min()), 6),
        "shift_own_mean": sum(r.shift_own_sum for r in receipts) / n if shifts_measured else None,
        "shift_other_mean": (
            sum(r.shift_other_sum for r in receipts) / n if shifts_measured else None
        ),
        "psnr_histogram": {"edges_db": list(PSNR_BIN_EDGES), "counts": counts.tolist()},
    }


def write_manifest(
    plan: ReleasePlan, receipts: Sequence[Receipt], mlflow_run_id: str | None = None
) -> dict[str, Any]:
    """Write ``quarantine.jsonl`` then ``manifest.json`` (last) and return the manifest.

    Every planned shard needs its receipt: a missing one is an error that says to rerun.
    """
    by_name = {r.name: r for r in receipts}
    missing = [s.name for s in plan.index.shards if s.name not in by_name]
    if missing:
        raise RuntimeError(
            f"{len(missing)} shards of {plan.out} are not finished ({missing[:3]}...): run the "
            "release again to finish them"
        )
    ordered = [by_name[s.name] for s in plan.index.shards]
    quarantine = [q for r in ordered for q in r.quarantine]
    lines = "".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine)
    storage.write_bytes_atomic(storage.join(plan.out, "quarantine.jsonl"), lines.encode())
    num_samples = sum(r.count for r in ordered)
    num_marked = sum(r.marked for r in ordered)
    marked_per_class = [sum(q[c] for q in plan.quotas) for c in range(len(plan.index.classes))]
    mark_cfg = plan.cfg.mark
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": plan.index.source,
        "source_shards": plan.index.url,
        "classes": list(plan.index.classes),
        "shards": [
            {"name": r.name, "count": r.count, "sha256": r.sha256, "marked": r.marked}
            for r in ordered
        ],
        "num_samples": num_samples,
        "num_marked": num_marked,
        "marked_fraction": plan.cfg.fraction,
        "marked_fraction_actual": num_marked / num_samples if num_samples else 0.0,
        "marked_per_class": marked_per_class,
        "num_quarantined": plan.index.num_quarantined + len(quarantine),
        "num_quarantined_source": plan.index.num_quarantined,
        "carrier_fingerprint": plan.carrier_fingerprint,
        "marker_id": plan.marker_id,
        "mark": {
            "eps": mark_cfg.eps,
            "eps_255": round(mark_cfg.eps * 255, 4),
            "steps": mark_cfg.steps,
            "psnr_floor": mark_cfg.psnr_floor,
            "method": mark_cfg.method,
            "pattern_freqs": mark_cfg.pattern_freqs,
            "batch_size": plan.cfg.batch_size,
            "selection": plan.cfg.selection,
            "skip_hardest": plan.cfg.skip_hardest if plan.cfg.selection == "hard" else 0.0,
        },
        "quality": _quality(ordered, shifts_measured=mark_cfg.method == "feature"),
        "plan_digest": plan.digest,
        "mlflow_run_id": mlflow_run_id,
    }
    storage.write_bytes_atomic(storage.join(plan.out, "manifest.json"), dumps(manifest))
    return manifest


def release(
    source: str,
    out: str,
    carriers: Carriers,
    marker: Marker,
    cfg: ReleaseConfig = ReleaseConfig(),
    device: str | torch.device = "cpu",
    mlflow_run_id: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Plan, mark every shard (skipping finished ones), write the manifest; returns it.

    ``progress``: optional callable taking the number of source samples just handled.
    """
    plan = plan_release(source, out, carriers, marker, cfg)
    receipts = []
    for task, info in zip(plan.tasks(), plan.index.shards, strict=True):
        receipts.append(release_shard(task, carriers, marker, device))
        if progress is not None:
            progress(info.count)
    return write_manifest(plan, receipts, mlflow_run_id)
