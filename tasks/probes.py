"""Task: the black-box probe set of a release (held-out probes marked with a carrier pool).

Made once per release and cached: a private safetensors file next to the carriers, and an
artifact of the release run, so that every later audit only runs the suspect forward.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from tqdm import tqdm

from radcore.mark import MarkConfig
from radcore.probes import ProbeSet, draw_pool, mark_probes, select_probes
from tasks import storage
from tasks.datasets import load_images
from tasks.models import load_marker
from tasks.steps import device_for, read_carriers

__all__ = ["prepare_probes", "probes_url_for"]


def probes_url_for(carriers_url: str) -> str:
    """Where the probe set of a release is cached: beside its (private) carriers file."""
    base = carriers_url.removesuffix(".safetensors")
    return base + ".probes.safetensors"


@task(name="prepare-probes", cache_policy=NONE, persist_result=False)
def prepare_probes(
    heldout: str,
    carriers_url: str,
    marker_spec: dict[str, Any],
    cfg: MarkConfig,
    per_class: int,
    num_controls: int,
    out: str,
    batch_size: int = 250,
) -> dict[str, Any]:
    """Mark ``per_class`` held-out images of each class with the release's carriers and
    ``num_controls`` fresh control carriers; write the probe set to the private URL ``out``.

    Reuses ``out`` when it already holds a probe set for these carriers (a resumed release);
    one made for other carriers is replaced. Returns a summary without secrets.
    """
    carriers = read_carriers(carriers_url)
    cached = ProbeSet.from_bytes(storage.read_bytes(out)) if storage.exists(out) else None
    if cached is not None and cached.carrier_fingerprint == carriers.fingerprint:
        return {
            "url": out,
            "num_probes": len(cached.labels),
            "pool_size": cached.pool_size,
            "pool_fingerprint": cached.pool_fingerprint,
            "reused": True,
        }
    device = device_for(0)
    marker = load_marker(marker_spec, device)
    images, labels = load_images(heldout)
    pick = select_probes(labels, per_class, carriers.num_classes)
    pool, true_index = draw_pool(carriers, num_controls)
    total = len(pick) * pool.num_classes
    quiet = not sys.stderr.isatty()
    with tqdm(total=total, desc="marking probes", unit="img", disable=quiet) as bar:
        probes = mark_probes(
            images[pick].to(device),
            labels[pick],
            pool,
            true_index,
            marker,
            cfg,
            batch_size,
            on_batch=bar.update,
        )
    storage.write_bytes_atomic(out, probes.to_bytes())
    return {
        "url": out,
        "num_probes": len(pick),
        "pool_size": probes.pool_size,
        "pool_fingerprint": probes.pool_fingerprint,
        "reused": False,
    }
