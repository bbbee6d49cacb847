"""Training throughput (LoRA SFT step, forward + backward): fixed padding vs length-bucketed batches.

    python benchmarks/train.py     # SmolLM2-135M + LoRA r=8; one step over 16 rows of 100..420 tokens
"""
import time

import torch

from common import load_default_backbone, peak_rss_mb, record, run_variant, table, variant_main

ROWS, FIXED_LENGTH, BATCH_TOKENS = 16, 448, 2048


def groups(vocab):
    from recbole_trsr.llm.scoring import Group

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(80, 400, (ROWS,), generator=g).tolist()
    return [Group(torch.randint(100, vocab, (n,), generator=g).tolist(),
                  [torch.randint(100, vocab, (20,), generator=g).tolist()]) for n in lengths]


def measure(variant):
    from peft import LoraConfig, get_peft_model

    from recbole_trsr.llm.scoring import AnswerScorer

    backbone = load_default_backbone()
    model = get_peft_model(backbone.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = groups(len(backbone.tokenizer))
    fixed = FIXED_LENGTH if variant == "fixed" else None
    scorer = AnswerScorer(model, 10539, 5230, backbone.tokenizer.pad_token_id, mode="naive",
                          batch_max_tokens=BATCH_TOKENS, fixed_length=fixed)
    labels = torch.full((ROWS,), 10539)

    def step():
        loss = torch.nn.functional.cross_entropy(scorer.vocab_logits(data).float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    tokens = sum(len(g.prefix) + len(g.suffixes[0]) for g in data)
    return {"variant": variant, "tokens_per_s": tokens / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def report():
    fixed, bucketed = run_variant(__file__, "fixed"), run_variant(__file__, "bucketed")
    rows = [[r["variant"], f"{r['tokens_per_s']:.0f}", f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"] for r in (fixed, bucketed)]
    text = table(["padding", "real tokens/s", "seconds per pass", "peak RSS MB"], rows)
    text += (f"\n\n{ROWS} rows of 100-420 tokens, forward + backward + AdamW step on LoRA r=8 (q,k,v,o); fixed pads every "
             f"row to {FIXED_LENGTH} in input order, bucketed sorts by length and pads each micro-batch of "
             f"<= {BATCH_TOKENS} tokens to its longest row\n\nspeedup: {bucketed['tokens_per_s'] / fixed['tokens_per_s']:.1f}x")
    print(text)
    record("Training: fixed vs length-bucketed padding", "python benchmarks/train.py", text)


if __name__ == "__main__":
    variant_main(measure, report)
