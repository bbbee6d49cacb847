"""Training throughput (LoRA SFT step, forward + backward + AdamW step).

    python benchmarks/train.py     # SmolLM2-135M + LoRA r=8; one step over 16 rows of 100..420 tokens

Rows, each against a baseline in the same run:
* padding: fixed (every row padded to 448) vs length-bucketed micro-batches, in the dtype ``auto`` picks;
* ``lora_layers``: adapters in every decoder layer vs only the top N (the backward pass stops at the
  lowest adapted layer), in fp32 (the path of CPUs without native bf16) and in the ``auto`` dtype.
"""
import time

import torch

from common import load_default_backbone, peak_rss_mb, record, run_variant, table, variant_main

ROWS, FIXED_LENGTH, BATCH_TOKENS, UPPER = 16, 448, 2048, 10


def groups(vocab):
    from recbole_trsr.llm.scoring import Group

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(80, 400, (ROWS,), generator=g).tolist()
    return [Group(torch.randint(100, vocab, (n,), generator=g).tolist(),
                  [torch.randint(100, vocab, (20,), generator=g).tolist()]) for n in lengths]


def measure(variant):
    """``variant`` = padding:layers:dtype, e.g. ``bucketed:10:float32`` (layers 0 = every layer)."""
    from peft import LoraConfig, get_peft_model

    from recbole_trsr.llm.scoring import AnswerScorer
    from recbole_trsr.llm.adapters import upper_layers

    padding, layers, dtype = variant.split(":")
    backbone = load_default_backbone(dtype)
    model = get_peft_model(backbone.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                      layers_to_transform=upper_layers(backbone.model.config.num_hidden_layers, int(layers))))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = groups(len(backbone.tokenizer))
    fixed = FIXED_LENGTH if padding == "fixed" else None
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
    return {"variant": variant, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "tokens_per_s": tokens / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def report():
    pairs = [("padding", "fixed:0:auto", "bucketed:0:auto"),
             (f"lora_layers {UPPER} of 30", "bucketed:0:float32", f"bucketed:{UPPER}:float32"),
             (f"lora_layers {UPPER} of 30", "bucketed:0:auto", f"bucketed:{UPPER}:auto")]
    rows, speedups = [], []
    for lever, base, new in pairs:
        b, n = run_variant(__file__, base), run_variant(__file__, new)
        for r in (b, n):
            rows.append([lever, r["variant"], r["dtype"], f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}x",
                         f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"])
        speedups.append(f"{lever} ({n['dtype']}): {n['tokens_per_s'] / b['tokens_per_s']:.2f}x")
    text = table(["lever", "padding:lora_layers:dtype", "dtype", "real tokens/s", "vs baseline", "seconds per pass",
                  "peak RSS MB"], rows)
    text += (f"\n\n{ROWS} rows of 100-420 tokens, forward + backward + AdamW step on LoRA r=8 (q,k,v,o); fixed pads every "
             f"row to {FIXED_LENGTH} in input order, bucketed sorts by length and pads each micro-batch of "
             f"<= {BATCH_TOKENS} tokens to its longest row; lora_layers 0 = every layer; each baseline is the first "
             f"row of its pair\n\nspeedups: " + "; ".join(speedups))
    print(text)
    record("Training: padding and LoRA placement", "python benchmarks/train.py", text)


if __name__ == "__main__":
    variant_main(measure, report)
