"""Data-plane throughput: sharding, releasing and reading 10,000 Fashion-MNIST images.

Measured in one run, side by side:

- sharding the IDX files into WebDataset shards (1,000 samples each), from local files to a
  local folder, and from an S3 bucket to the same bucket on a loopback S3 endpoint (moto);
- a release of the local shards with radtrace's defaults (10% marked, ``MarkConfig()``,
  batches of up to 250) and the pure marking time of the same images with the same batches in
  memory: the writer's overhead is ``release / marking - 1`` (goal: under 10%);
- reading the release with ``webdataset.WebDataset`` (PNG decoded to PIL), locally and from S3.

The marker is a random-weight ``SmallResNet(10, 1)`` (timing only), as in ``marking.py``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import numpy as np
import torch
import webdataset as wds

from radcore.carriers import draw_carriers
from radcore.datasets import FASHION_MNIST_DIR
from radcore.mark import mark
from radcore.markers import marker_from_classifier
from radcore.nets import SmallResNet
from tasks import storage
from tasks.release import ReleaseConfig, plan_release, release, selection_secret
from tasks.shards import ShardConfig, shard_source
from tasks.sources import open_idx
from tasks.tario import iter_tar_samples

__all__ = ["NAME", "run", "summarize"]

NAME = "shards"
NUM_IMAGES = 10_000
PER_SHARD = 1_000
_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _timed(fn, *args, **kwargs) -> tuple[object, float]:
    t = perf_counter()
    out = fn(*args, **kwargs)
    return out, perf_counter() - t


def _read_all(urls: list[str]) -> int:
    n = 0
    for _key, image, _cls in (
        wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("__key__", "png", "cls")
    ):
        image.load()
        n += 1
    return n


def _mark_in_memory(shards: str, plan, carriers, marker) -> float:
    """Seconds radcore.mark takes on the images the release marks, batched as the release does."""
    from tasks.release import _decode, _pick  # the release's own selection, not a copy of it

    secret = selection_secret(carriers)
    batches = []
    for task in plan.tasks():
        samples = list(iter_tar_samples(storage.join(shards, task.name)))
        by_class: dict[int, list[str]] = {}
        for s in samples:
            by_class.setdefault(int(s["cls"]), []).append(s["__key__"])
        picked = _pick(by_class, task.quota, secret)
        chosen = [s for s in samples if s["__key__"] in picked]
        for i in range(0, len(chosen), plan.cfg.batch_size):
            chunk = chosen[i : i + plan.cfg.batch_size]
            x = torch.from_numpy(np.stack([_decode(s["png"]) for s in chunk]))
            y = torch.tensor([int(s["cls"]) for s in chunk])
            batches.append((x, y))
    total = 0.0
    gen = torch.Generator().manual_seed(0)
    for x, y in batches:
        t = perf_counter()
        mark(x, y, carriers, marker, plan.cfg.mark, gen)
        total += perf_counter() - t
    return total


def _s3_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stdout
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(_S3_ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    return server


def run() -> dict[str, object]:
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    marker = marker_from_classifier(SmallResNet(10, 1), in_channels=1, mean=(0.286,), std=(0.353,))
    carriers = draw_carriers(10, marker.dim, marker_id=marker.marker_id)
    cfg = ReleaseConfig(selection="random")  # the writer's own cost; hard selection timed apart
    shard_cfg = ShardConfig(max_samples=PER_SHARD)
    saved_env = {k: os.environ.get(k) for k in (*_S3_ENV, "AWS_ENDPOINT_URL")}
    server = _s3_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp)
            _, t_shard_local = _timed(
                shard_source, open_idx(limit=NUM_IMAGES), str(local / "shards"), shard_cfg
            )
            storage.create_bucket("s3://bench")
            for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
                src = FASHION_MNIST_DIR / name
                storage.write_bytes_atomic(f"s3://bench/fmnist/{name}", src.read_bytes())
            _, t_shard_s3 = _timed(
                shard_source,
                open_idx("s3://bench/fmnist", limit=NUM_IMAGES),
                "s3://bench/shards",
                shard_cfg,
            )
            manifest, t_release = _timed(
                release, str(local / "shards"), str(local / "rel"), carriers, marker, cfg
            )
            hard_cfg = ReleaseConfig(selection="hard")
            _, t_release_hard = _timed(
                release, str(local / "shards"), str(local / "rel_hard"), carriers, marker, hard_cfg
            )
            plan = plan_release(str(local / "shards"), str(local / "rel"), carriers, marker, cfg)
            t_mark = _mark_in_memory(str(local / "shards"), plan, carriers, marker)
            names = [s["name"] for s in manifest["shards"]]
            for name in names:
                data = (local / "rel" / name).read_bytes()
                storage.write_bytes_atomic(f"s3://bench/rel/{name}", data)
            n_local, t_read_local = _timed(_read_all, [str(local / "rel" / n) for n in names])
            n_s3, t_read_s3 = _timed(_read_all, [f"s3://bench/rel/{n}" for n in names])
            receipts = [
                storage.read_bytes(str(local / "rel" / "_receipts" / f"{n}.json")) for n in names
            ]
    finally:
        server.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    mark_inside_release = sum(json.loads(r)["mark_seconds"] for r in receipts)
    assert n_local == n_s3 == NUM_IMAGES, (n_local, n_s3)
    return {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "images": NUM_IMAGES,
        "per_shard": PER_SHARD,
        "loadavg_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "shard_images_per_second": {
            "local": NUM_IMAGES / t_shard_local,
            "s3_loopback": NUM_IMAGES / t_shard_s3,
        },
        "read_release_images_per_second": {
            "local": NUM_IMAGES / t_read_local,
            "s3_loopback": NUM_IMAGES / t_read_s3,
        },
        "release": {
            "marked": manifest["num_marked"],
            "fraction": cfg.fraction,
            "steps": cfg.mark.steps,
            "batch_size": cfg.batch_size,
            "seconds": t_release,
            "images_per_second": NUM_IMAGES / t_release,
            "marked_per_second": manifest["num_marked"] / t_release,
            "mark_seconds_inside_release": mark_inside_release,
            "writer_seconds": t_release - mark_inside_release,
            "writer_overhead_vs_its_own_marking": (t_release - mark_inside_release)
            / mark_inside_release,
            "mark_seconds_in_memory": t_mark,
            "overhead_vs_in_memory_marking": t_release / t_mark - 1,
            "psnr_mean": manifest["quality"]["psnr_mean"],
        },
        "release_hard_selection": {
            "seconds": t_release_hard,
            "extra_vs_random_selection": t_release_hard / t_release - 1,
        },
        "notes": (
            "overhead_vs_in_memory_marking = release seconds / seconds of radcore.mark on the same "
            "images and batches in memory - 1 (goal < 0.10); it compares two runs minutes apart, "
            "so load changes between them show up in it. writer_overhead_vs_its_own_marking = "
            "(release seconds - seconds inside radcore.mark during the release) / the latter: "
            "the same ratio measured within one run. release_hard_selection: the same release "
            "with selection='hard' (every image scored by the marker's classifier first). "
            "Random marker weights: timing only. "
            "S3 is moto's server on loopback in this process, so its numbers include the server's "
            "own CPU time on the same 2 cores."
        ),
    }


def summarize(result: dict) -> str:
    s, r, rel = (
        result["shard_images_per_second"],
        result["read_release_images_per_second"],
        result["release"],
    )
    hard = result["release_hard_selection"]
    return (
        f"sharding {s['local']:.0f} img/s local, {s['s3_loopback']:.0f} img/s S3; "
        f"reading {r['local']:.0f} img/s local, {r['s3_loopback']:.0f} img/s S3; "
        f"release {rel['images_per_second']:.0f} img/s ({rel['marked']} marked), "
        f"overhead over in-memory marking {100 * rel['overhead_vs_in_memory_marking']:.1f}%, "
        f"writer time over its own marking {100 * rel['writer_overhead_vs_its_own_marking']:.1f}%; "
        f"hard selection adds {100 * hard['extra_vs_random_selection']:.1f}%"
    )
