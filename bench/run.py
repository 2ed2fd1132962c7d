"""Run every benchmark and write its results to bench/results/<name>.json.

Each benchmark is a module in this package with ``NAME: str``, ``run() -> dict`` and
``summarize(result: dict) -> str``; add a new one by listing its module in ``BENCHMARKS``.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import time
from pathlib import Path

__all__ = ["BENCHMARKS", "RESULTS_DIR", "main", "write_json"]

BENCHMARKS: tuple[str, ...] = ("bench.marking", "bench.shards", "bench.runners")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    for name in BENCHMARKS:
        module = importlib.import_module(name)
        start = time.perf_counter()
        result = module.run()
        out = RESULTS_DIR / f"{module.NAME}.json"
        write_json(out, result)
        print(module.summarize(result))
        print(f"[{module.NAME}] {time.perf_counter() - start:.1f} s -> {out}")


if __name__ == "__main__":
    main()
