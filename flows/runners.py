"""Task runners: threads on one machine (default) or Dask, locally or on a running scheduler."""

from __future__ import annotations

import os
from typing import Literal

from prefect.task_runners import ThreadPoolTaskRunner

__all__ = ["Runner", "task_runner"]

Runner = Literal["threads", "dask"]


def task_runner(kind: Runner = "threads", workers: int = 2, address: str | None = None):
    """A Prefect task runner.

    threads: a thread pool of ``workers`` (torch releases the GIL in its kernels).
    dask: prefect-dask's DaskTaskRunner on ``address`` (``tcp://host:8786``) when given, else a
    LocalCluster of ``workers`` single-threaded worker processes. Dask workers report to the
    Prefect API, so they need a real Prefect server (``radtrace stack up``), not the ephemeral one.
    """
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind != "dask":
        raise ValueError(f"runner must be 'threads' or 'dask', got {kind!r}")
    if not os.environ.get("PREFECT_API_URL"):
        raise RuntimeError(
            "--runner dask needs a Prefect server that the Dask workers can reach: run "
            "`radtrace stack up` (radtrace then uses it) or set PREFECT_API_URL"
        )
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True},
    )
