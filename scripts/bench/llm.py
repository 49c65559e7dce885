#!/usr/bin/env python
"""LLM benchmark: the same requests through the ml-service (vllm backend, A/B off) and straight to the LLM server.

Not a test: it prints latency, time to first token and tokens/s for each side and the ratios.

    python scripts/bench/llm.py                           # llama.cpp + SmolLM2-135M here, 12 requests a side
    python scripts/bench/llm.py --requests 40 --max-tokens 32
    python scripts/bench/llm.py --server http://127.0.0.1:8000 --served-name qwen   # a vLLM already running

One server (llama.cpp's, started on a free loopback port and stopped by its PID, unless ``--server``
names one), one ml-service (uvicorn in this process, on the vllm backend, inference log on) with a
deployment of one ``llm`` version. Requests alternate between the sides, one at a time, all with the
same prompt at temperature 0 and a fixed ``max_tokens``: unstreamed chat completions, then streamed
ones (time to first token is the first chunk with text). Everything runs in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PROMPT = [{"role": "user", "content": "Write a short poem about the sea."}]


def measure(client, stream: bool, max_tokens: int) -> tuple[float, float, int]:
    """(latency ms, ttft ms, completion tokens) of one chat completion."""
    start = time.perf_counter()
    if not stream:
        answer = client.chat.completions.create(model="x", messages=PROMPT, max_tokens=max_tokens, temperature=0)
        latency = (time.perf_counter() - start) * 1000
        return latency, latency, answer.usage.completion_tokens
    ttft, tokens = None, 0
    for chunk in client.chat.completions.create(model="x", messages=PROMPT, max_tokens=max_tokens, temperature=0,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            tokens += 1
            if ttft is None:
                ttft = (time.perf_counter() - start) * 1000
    latency = (time.perf_counter() - start) * 1000
    return latency, ttft if ttft is not None else latency, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12, help="requests per side and mode")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--server", help="an OpenAI-compatible server already running (default: start llama.cpp)")
    parser.add_argument("--served-name", default="smollm2", help="the model name that server serves")
    args = parser.parse_args()

    import openai

    work = Path(tempfile.mkdtemp(prefix="matih-bench-llm-"))
    os.environ.update({"HOME": str(work), "MATIH_HOME": str(work / "matih")})
    os.chdir(work)
    server = None
    if args.server is None:
        from matih_lite.testing.llmserver import LlamaServer, llama_server_missing

        why = llama_server_missing()
        if why:
            print(f"cannot start llama.cpp here: {why}", file=sys.stderr)
            return 2
        server = LlamaServer(work, alias=args.served_name).start()
        url = server.url
    else:
        url = args.server.rstrip("/").removesuffix("/v1")
    try:
        import matih_lite as ml
        from matih_lite.host import Host
        from matih_lite.identity import LOCAL_ADMIN
        from matih_lite.registry import Registry
        from matih_lite.serving.deployments import Deployments
        from matih_lite.serving.flavors.llm import LanguageModel, save_llm
        from matih_lite.testing.service import serve

        (work / "matih.toml").write_text(f'[profiles.lite]\nllm = {{ backend = "vllm", url = "{url}" }}\n')
        host = Host.open()
        save_llm(LanguageModel(args.served_name, served_model_name=args.served_name), work / "model")
        with ml.start_run(experiment="bench") as run:
            ml.log_artifacts(work / "model", "model")
        Registry(host).register_version(LOCAL_ADMIN, "chat", run_id=run.run_id, path="model")
        Registry(host).promote(LOCAL_ADMIN, "chat", 1, "Staging")  # where a version may take live traffic
        Deployments(host).create(LOCAL_ADMIN, "chat", "chat", version=1)
        with serve(host) as service:
            sides = {"direct": openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300),
                     "matih": openai.OpenAI(base_url=f"{service}/api/v1/deployments/chat", api_key="x",
                                            max_retries=0, timeout=300)}
            for client in sides.values():  # warm both paths (the service loads the version on first use)
                measure(client, False, 2)
            print(f"server {url}, model {args.served_name}, {args.requests} requests a side and mode, "
                  f"max_tokens {args.max_tokens}, one at a time, alternating")
            print(f"{'mode':<10}{'side':<8}{'p50 ms':>10}{'p50 ttft ms':>13}{'tokens/s':>10}")
            for stream in (False, True):
                results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in sides}
                for _ in range(args.requests):
                    for name, client in sides.items():
                        results[name].append(measure(client, stream, args.max_tokens))
                p50 = {}
                for name, rows in results.items():
                    lat = statistics.median(r[0] for r in rows)
                    ttft = statistics.median(r[1] for r in rows)
                    rate = sum(r[2] for r in rows) / (sum(r[0] for r in rows) / 1000)
                    p50[name] = (lat, ttft, rate)
                    print(f"{'stream' if stream else 'whole':<10}{name:<8}{lat:>10.1f}{ttft:>13.1f}{rate:>10.1f}")
                (ld, td, rd), (lm, tm, rm) = p50["direct"], p50["matih"]
                print(f"{'':<10}{'ratio':<8}{lm / ld:>10.3f}{tm / td:>13.3f}{rm / rd:>10.3f}   "
                      f"(matih / direct; overhead p50 {lm - ld:+.1f} ms)")
        host.close()
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
