"""The local model through nearline vs raw llama-cpp-python, on the same prompt, side by side.

Raw: ``Llama.create_completion(stream=True)`` in this process. Through nearline: a real
``nearline serve`` subprocess, streamed over HTTP. Both load the same GGUF with the same
settings and alternate run by run, so machine noise hits both alike. A different user
message each run keeps the KV cache from making runs warm (the shared chat-template prefix
is reused in both paths alike). Prints the median time to first token and tokens/s.

    .venv/bin/python benchmarks/local_model_overhead.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nearline.gateway.providers.local import default_model_path
from nearline.testing import serve_in_process

sys.path.insert(0, str(Path(__file__).parent))
from workload import stream_chat

MAX_TOKENS = 64


def prompt(run: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {run}: describe the colour of the sky."}]


def raw_run(llm: object, formatter: object, run: int) -> tuple[float, float]:
    from llama_cpp import Llama

    assert isinstance(llm, Llama)
    rendered = formatter(messages=prompt(run))  # type: ignore[operator]
    tokens = llm.tokenize(
        rendered.prompt.encode(), add_bos=not rendered.added_special, special=True
    )
    stop = rendered.stop if isinstance(rendered.stop, list) else []
    if isinstance(rendered.stop, str):
        stop = [rendered.stop]
    start = time.perf_counter()
    first = None
    count = 0
    for chunk in llm.create_completion(
        prompt=tokens,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        stop=stop,
        stream=True,
    ):
        if chunk["choices"][0]["text"]:
            first = first or time.perf_counter()
            count += 1
    end = time.perf_counter()
    assert first is not None
    return (first - start) * 1000, (count - 1) / (end - first)


def gateway_run(url: str, run: int) -> tuple[float, float]:
    """Stream one answer over a TCP_NODELAY socket (``workload.stream_chat``): httpx adds
    ~40 ms to the first streamed chunk here, with or without nearline in the path."""
    body = {
        "model": "smollm2-135m-instruct",
        "messages": prompt(run),
        "stream": True,
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
    }
    answer = stream_chat(url, body, {"Cache-Control": "no-store"})
    assert answer.first_content_ms is not None
    seconds_after_first = (answer.total_ms - answer.first_content_ms) / 1000
    return answer.first_content_ms, (answer.content_chunks - 1) / seconds_after_first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(model_path=str(default_model_path()), n_ctx=2048, n_batch=512, verbose=False)
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(llm.token_eos()),
        bos_token=llm._model.token_get_text(llm.token_bos()),
    )
    config = Path(tempfile.mkdtemp()) / "nearline.yaml"
    config.write_text(yaml.safe_dump({"server": {"log_level": "warning"}}))
    with serve_in_process(config) as url:
        raw_run(llm, formatter, -1)
        gateway_run(url, -1)
        raw, via = [], []
        for run in range(args.runs):
            raw.append(raw_run(llm, formatter, run))
            via.append(gateway_run(url, run))
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M')} | {os.cpu_count()} cores | load "
            f"{os.getloadavg()[0]:.2f} | {args.runs} runs each, alternating | "
            f"{MAX_TOKENS} tokens max, temperature 0"
        )
        print("| path | TTFT median (ms) | tokens/s median |")
        print("|---|---:|---:|")
        for name, runs in (("raw llama-cpp-python", raw), ("through nearline (HTTP, SSE)", via)):
            print(
                f"| {name} | {statistics.median(r[0] for r in runs):.1f} "
                f"| {statistics.median(r[1] for r in runs):.1f} |"
            )
        added = statistics.median(v[0] - r[0] for r, v in zip(raw, via, strict=True))
        print(f"\nmedian added time to first token: {added:+.1f} ms")


if __name__ == "__main__":
    main()
