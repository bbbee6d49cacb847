"""Candidate scoring: naive (one full prompt per candidate) vs shared prefix (packed; KV cache),
100 candidates per user.

    python benchmarks/scoring.py        # SmolLM2-135M, bf16 where native; 180-token prefix, 20-token suffixes
"""
import time

import torch

from common import load_default_backbone, matmul_gflops, peak_rss_mb, record, run_variant, table, variant_main

USERS, CANDIDATES, PREFIX, SUFFIX = 3, 100, 180, 20


def groups(vocab):
    from recbole_trsr.llm.scoring import Group

    g = torch.Generator().manual_seed(0)
    return [Group(torch.randint(100, vocab, (PREFIX,), generator=g).tolist(),
                  [torch.randint(100, vocab, (SUFFIX,), generator=g).tolist() for _ in range(CANDIDATES)])
            for _ in range(USERS)]


def measure(variant):
    from recbole_trsr.llm.scoring import AnswerScorer

    backbone = load_default_backbone()
    model, tok = backbone.model.eval(), backbone.tokenizer
    rss_loaded = peak_rss_mb()
    data = groups(len(tok))
    scorer = AnswerScorer(model, 10539, 5230, tok.pad_token_id, mode=variant)
    with torch.no_grad():
        from recbole_trsr.llm.scoring import Group

        scorer.yes_no_logits([Group(data[0].prefix, data[0].suffixes[:8])])  # warm-up
        start = time.perf_counter()
        logits = scorer.yes_no_logits(data)
        seconds = time.perf_counter() - start
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    tokens = USERS * CANDIDATES * (PREFIX + SUFFIX) if variant == "naive" else USERS * (PREFIX + CANDIDATES * SUFFIX)
    return {"variant": variant, "seconds": seconds, "prompts_per_s": USERS * CANDIDATES / seconds,
            "gflops": 2 * n_params * tokens / seconds / 1e9, "peak_rss_mb": peak_rss_mb(),
            "rss_after_load_mb": rss_loaded, "logits": logits.float().tolist(), "dtype": str(model.dtype)}


def report():
    naive, packed, kv = (run_variant(__file__, v) for v in ("naive", "packed", "kv"))
    # The machine's limit is the matmul rate of the dtype the model actually ran in (fp32 where
    # the CPU has no native bf16): comparing fp32 work to a bf16 rate read 9453% on such a CPU.
    dtype = getattr(torch, naive["dtype"].replace("torch.", ""))
    rate = matmul_gflops(dtype)
    dname = naive["dtype"].replace("torch.", "")
    diff = {r["variant"]: max(abs(a - b) for x, y in zip(naive["logits"], r["logits"]) for a, b in zip(x, y))
            for r in (packed, kv)}
    rows = [[r["variant"], f"{r['prompts_per_s']:.1f}", f"{r['prompts_per_s'] / naive['prompts_per_s']:.1f}x",
             f"{r['gflops']:.0f}", f"{r['gflops'] / rate:.0%}", f"{r['peak_rss_mb']:.0f}",
             f"{r['peak_rss_mb'] - r['rss_after_load_mb']:.0f}"] for r in (naive, packed, kv)]
    text = table(["scoring", "prompts/s", "vs naive", "useful GFLOP/s", f"of {dname} matmul rate", "peak RSS MB", "RSS above loaded model MB"], rows)
    speedup = kv["prompts_per_s"] / naive["prompts_per_s"]
    text += (f"\n\n{USERS} users x {CANDIDATES} candidates, prefix {PREFIX} + suffix {SUFFIX} tokens, {naive['dtype']}; "
             f"machine {dname} matmul rate {rate:.0f} GFLOP/s; useful FLOPs = 2 x non-embedding params x tokens each "
             f"way needs; max |Yes/No logit difference| vs naive: packed {diff['packed']:.3g}, kv {diff['kv']:.3g} ({dname})\n\nspeedup: {speedup:.1f}x")
    print(text)
    record("Candidate scoring: naive vs shared prefix", "python benchmarks/scoring.py", text)


if __name__ == "__main__":
    variant_main(measure, report)
