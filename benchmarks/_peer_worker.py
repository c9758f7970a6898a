"""Runs inside the PEER's own environment (aurelio semantic-router), not semroute's. Reads a JSON job on stdin,
prints a JSON result: index build time and per-query decision latency at batch 1."""

import json
import os
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def main() -> None:
    job = json.load(sys.stdin)
    import torch
    from semantic_router import Route
    from semantic_router.encoders import HuggingFaceEncoder
    from semantic_router.routers import SemanticRouter

    torch.set_num_threads(job.get("threads", 1))
    import semantic_router

    encoder = HuggingFaceEncoder(name=job["model_path"], device="cpu")
    routes = [Route(name=n, utterances=u) for n, u in job["routes"].items()]
    t = time.perf_counter()
    router = SemanticRouter(encoder=encoder, routes=routes, auto_sync="local")
    build_s = time.perf_counter() - t
    qs = job["queries"]
    for q in qs[:5]:
        router(q)
    lat = []
    names = []
    for q in qs:
        t = time.perf_counter()
        r = router(q)
        lat.append(time.perf_counter() - t)
        names.append(r.name)
    json.dump({"build_s": build_s, "latencies_s": lat, "decisions": names,
               "version": getattr(semantic_router, "__version__", "?")}, sys.stdout)


if __name__ == "__main__":
    main()
