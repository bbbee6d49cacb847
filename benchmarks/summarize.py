"""Summarization throughput: one prompt at a time vs batched generation (length-sorted batches).

    python benchmarks/summarize.py     # SmolLM2-135M, 32 ml-100k block prompts of 10 items, 32 new tokens
"""
import time

from common import ROOT, load_default_backbone, peak_rss_mb, record, run_variant, table, variant_main

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
    from recbole_trsr.summarize.summarizer import LLMGenerator

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


def report():
    one, batched = run_variant(__file__, "one-by-one"), run_variant(__file__, f"batched-{BATCH}")
    rows = [[r["variant"], f"{r['per_s']:.2f}", f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"] for r in (one, batched)]
    text = table(["summarization", "summaries/s", "seconds", "peak RSS MB"], rows)
    text += (f"\n\n{N_PROMPTS} block prompts (7-10 ml-100k items), greedy, {NEW_TOKENS} new tokens each\n\n"
             f"speedup: {batched['per_s'] / one['per_s']:.1f}x")
    print(text)
    record("Summarization: one-by-one vs batched", "python benchmarks/summarize.py", text)


if __name__ == "__main__":
    variant_main(measure, report)
