"""radtrace benchmarks: ``python -m bench.run`` runs each and writes bench/results/<name>.json."""
