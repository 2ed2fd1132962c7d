"""The quick demo at other sizes: SIZES='num_per_half=15000,epochs=6' (DemoParams.quick overrides)
.venv/bin/python bench/scratch/2026-12-06/quick.py; prints the rows and the timings."""
import json, os, time
from flows.demo import DemoParams, demo_flow

over = {k: int(v) for k, v in (kv.split("=") for kv in os.environ.get("SIZES", "").split(",") if kv)}
t = time.time()
res = demo_flow(DemoParams.quick(**over), f".radtrace/demo/scratch-{'-'.join(f'{k}{v}' for k, v in over.items())}")
print(json.dumps({"sizes": over, "minutes": round((time.time() - t) / 60, 2), "timings": res["timings_s"],
                  "models": [{k: m[k] for k in ("name", "accuracy", "log10_p_blackbox", "log10_p_whitebox")} for m in res["models"]]}))
