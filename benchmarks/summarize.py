"""Summarization throughput: one prompt at a time vs batched generation (length-sorted batches), and
the batched calls spread over N Ray actors (each with its own copy of the LLM).

    python benchmarks/summarize.py     # SmolLM2-135M, 32 ml-100k block prompts of 10 items, 32 new tokens

The Ray row counts everything a run pays: starting Ray, the actors loading their models, the calls.
On a 2-core machine it cannot gain (the actors share the cores the single process already used);
it shows the overhead. On a cluster, ``ray_address: auto`` and one actor per GPU/node is the point.
"""
import time

from common import (DEFAULT_LLM, ROOT, cache_dir, load_default_backbone, peak_rss_mb, record, run_variant, table,
                    variant_main)

N_PROMPTS, BLOCK, NEW_TOKENS, BATCH = 32, 10, 32, 16


def prompts():
    import yaml

    items = [line.split("\t") for line in open(__import__("recbole").__path__[0] + "/dataset_example/ml-100k/ml-100k.item",
                                                encoding="utf-8").read().splitlines()[1:]]
    template = yaml.safe_load(open(ROOT / "properties/model/LLMTRSR.yaml"))["summary_block_template"]
    out = []
    for p in range(N_PROMPTS):
        block = items[p * 7 % 1500: p * 7 % 1500 + BLOCK - (p % 4)]  # 7..10 items: uneven lengths
        out.append(template.format(items="\n".join(f"- {i[1]} ({i[3]})" for i in block)))
    return out


def measure(variant):
    if variant.startswith("ray-"):
        return measure_ray(int(variant.split("-")[1]))
    from recbole_trsr.llm.generation import LLMGenerator

    backbone = load_default_backbone()
    gen = LLMGenerator(backbone.model, backbone.tokenizer, max_new_tokens=NEW_TOKENS)
    data = prompts()
    batch = 1 if variant == "one-by-one" else BATCH
    if variant != "one-by-one":
        data = sorted(data, key=len)  # what Summarizer does
    gen(data[:2])  # warm-up
    start = time.perf_counter()
    for k in range(0, len(data), batch):
        gen(data[k:k + batch])
    seconds = time.perf_counter() - start
    return {"variant": variant, "per_s": len(data) / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def measure_ray(workers):
    """Batches of BATCH over ``workers`` Ray actors, timed from ray.init to the last summary."""
    import ray

    from recbole_trsr.llm.backbone import resolve_model_folder
    from recbole_trsr.summarize.engines import RayEngine

    folder = resolve_model_folder(DEFAULT_LLM, cache_dir())
    data = sorted(prompts(), key=len)
    batches = [data[k:k + BATCH] for k in range(0, len(data), BATCH)]
    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    engine = RayEngine(workers, folder, cache_dir(), "auto", "cpu", dict(max_new_tokens=NEW_TOKENS))
    started = time.perf_counter()
    list(engine.map([data[:2]] * workers))  # every actor loaded (and warm)
    ready = time.perf_counter()
    list(engine.map(batches))
    seconds = time.perf_counter() - ready
    engine.close()
    ray.shutdown()
    return {"variant": f"ray-{workers} actors", "per_s": len(data) / seconds, "seconds": seconds,
            "startup_s": ready - start, "peak_rss_mb": peak_rss_mb(), "ray_init_s": started - start}


def report():
    one, batched = run_variant(__file__, "one-by-one"), run_variant(__file__, f"batched-{BATCH}")
    ray_rows = [run_variant(__file__, f"ray-{n}") for n in (1, 2)]
    rows = [[r["variant"], f"{r['per_s']:.2f}", f"{r['per_s'] / batched['per_s']:.2f}x", f"{r['seconds']:.1f}",
             f"{r.get('startup_s', 0):.1f}", f"{r['peak_rss_mb']:.0f}"] for r in (one, batched, *ray_rows)]
    text = table(["summarization", "summaries/s", "vs batched", "seconds", "start-up s (Ray + model loads)",
                  "peak RSS MB (driver)"], rows)
    text += (f"\n\n{N_PROMPTS} block prompts (7-10 ml-100k items), greedy, {NEW_TOKENS} new tokens each; Ray rows: "
             f"batches of {BATCH} over N actors of 1 CPU each, after start-up (reported apart)\n\n"
             f"speedup (batched vs one-by-one): {batched['per_s'] / one['per_s']:.1f}x")
    print(text)
    record("Summarization: one-by-one vs batched vs Ray actors", "python benchmarks/summarize.py", text)


if __name__ == "__main__":
    variant_main(measure, report)
