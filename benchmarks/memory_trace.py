"""The memory plan's trace against real steps on this CPU, and the plan for 7-8B models (#46).

    python benchmarks/memory_trace.py [--record]          # proof on Llama-shaped random models + 7-8B plans
    python benchmarks/memory_trace.py --proof_only --shapes=small
    python benchmarks/memory_trace.py --plans_only --record

Proof: for Llama-shaped random models (bf16 where the CPU computes it natively, else fp32) and each
lever (graph kept for one backward; per-micro-batch backward; + gradient checkpointing), one real
LoRA step's peak above what is resident (the CPU allocator's own running total, read from the
profiler's allocation records) against the trace of the same step on fake tensors
(``recbole_trsr.llm.memory_trace``). k-bit levers are not in the proof: bitsandbytes runs other
kernels on a CPU than on a GPU (``benchmarks/gpu_check.py`` compares them where one is lent).

Plans: ``python -m recbole_trsr.memory_plan`` for Llama-3-8B, Qwen2.5-7B and Mistral-7B
(``tests/data/configs/``) at the recipe's settings (``properties/recipe/LLMTRSR.yaml``: 4 prompts of
512 tokens, 4 negatives, LoRA in the top 10 layers) and at long-history settings (prompts of 2,048
tokens), every lever, today's estimate beside the trace.
"""
import argparse
import os
import sys
import time

import torch

from common import ROOT, machine, record, table

SHAPES = {"small": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
                        num_key_value_heads=4, vocab_size=32000),
          "1.1B": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000)}
LEVERS = (("graph kept for one backward", False, False), ("backward_per_micro_batch", True, False),
          ("+ gradient_checkpointing", True, True))
CONFIGS = ("Meta-Llama-3-8B-Instruct", "Qwen2.5-7B-Instruct", "Mistral-7B-Instruct-v0.3")


def proof(shape_name, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from recbole_trsr.llm import memory_trace
    from recbole_trsr.llm.memory import prepare_for_training

    config = LlamaConfig(**SHAPES[shape_name], max_position_embeddings=4096, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    lora = lambda: LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",  # noqa: E731
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    groups = memory_trace.synthetic_groups([(480, [32] * 5), (400, [32] * 5), (320, [32] * 5)], config.vocab_size)
    labels = [5, 6, 6, 6, 6] * len(groups)
    kwargs = dict(answer_ids=(5, 6), mode="packed", batch_max_tokens=700)
    rows = []
    for name, micro, ckpt in LEVERS:
        began = time.perf_counter()
        fake = memory_trace.fake_llm(config, dtype, lora(), ckpt)
        traced = memory_trace.trace_training(fake, groups, labels, kwargs, micro).step
        trace_s = time.perf_counter() - began
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.config.use_cache = False
        model = get_peft_model(prepare_for_training(model, ckpt), lora())
        began = time.perf_counter()
        real = memory_trace.measured_training(model, groups, labels, kwargs, micro)
        real_s = time.perf_counter() - began
        rows.append([name, f"{real / 2 ** 20:.1f}", f"{traced / 2 ** 20:.1f}", f"{traced / real:.4f}",
                     f"{trace_s:.1f}", f"{real_s:.1f}"])
        print(rows[-1], flush=True)
        del model
    return rows


def plans(prompt_tokens, summary_paradigm="none"):
    from recbole_trsr import memory_plan
    from recbole_trsr.config import TRSRConfig

    out = []
    for name in CONFIGS:
        path = ROOT / "tests" / "data" / "configs" / name / "config.json"
        config = TRSRConfig("LLMTRSR", "ml-100k", config_file_list=[str(ROOT / "properties" / "recipe" / "LLMTRSR.yaml")],
                            config_dict={"llm_path": str(path), "prompt_max_tokens": prompt_tokens,
                                         "summary_paradigm": summary_paradigm})
        run = {k: config[k] for k in memory_plan.PLAN_KEYS}
        p = memory_plan.plan(path, run, workers=os.cpu_count() or 1)
        print(memory_plan.render(p, name), flush=True)
        out.append((name, p))
    return out


def plan_table(named):
    from recbole_trsr import memory_plan

    gib = lambda b: "-" if b is None else f"{b / 2 ** 30:.1f}"  # noqa: E731
    rows = []
    for name, p in named:
        for lv in p["levers"]:
            rows.append([name, lv["name"], gib(lv["weights"]), gib(lv["train_step"]), gib(lv["eval_step"]), gib(lv["train"]),
                         gib(lv["evaluate"]), gib(lv["summarize"]), gib(lv["estimate_train"]),
                         f"{lv['train'] / lv['estimate_train']:.2f}"]
                        + ["yes" if memory_plan.fits(lv["peak"], c) else "no" for c in memory_plan.CARDS_GB])
    return table(["model", "levers (cumulative)", "weights", "training step", "evaluation step", "training peak",
                  "evaluation peak", "summarizing", "today's estimate (training)", "trace / estimate"]
                 + [f"fits {c} GB" for c in memory_plan.CARDS_GB], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="small,1.1B")
    parser.add_argument("--proof_only", action="store_true")
    parser.add_argument("--plans_only", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from recbole_trsr.llm.backbone import pick_dtype

    dtype = pick_dtype("auto", "cpu")
    text = [f"Proof on this CPU ({machine()}), {str(dtype).split('.')[-1]}: one LoRA step (r=8 on q, k, v, o, every "
            "layer; 3 prompts of 320-480 + 5 x 32 tokens, packed, batch_max_tokens=700, Adam), the step's peak "
            "above what is resident. 'allocator' is the CPU allocator's own running total (profiler allocation "
            "records); 'traced' is recbole_trsr.llm.memory_trace on fake tensors, no weights."]
    if args.plans_only:
        text = [f"Plans only (no proof rows), traced on fake tensors on this CPU ({machine()})."]
    for shape in ([] if args.plans_only else args.shapes.split(",")):
        rows = proof(shape, dtype)
        s = SHAPES[shape]
        text += ["", f"Llama shape '{shape}': hidden {s['hidden_size']}, {s['num_hidden_layers']} layers, "
                 f"intermediate {s['intermediate_size']}, vocab {s['vocab_size']}", "",
                 table(["lever", "allocator (MiB)", "traced (MiB)", "traced / allocator", "trace (s)", "real, 2 steps (s)"],
                       rows)]
    if not args.proof_only:
        for tokens, paradigm, label in (
                (512, "none", "recipe settings: prompts of 512 tokens, no summarizer"),
                (2048, "hierarchical", "long-history settings: prompts of 2,048 tokens, the hierarchical summarizer in "
                                       "the process (summary_batch_max_tokens 24576, prompts up to 768 + 48 new tokens)")):
            text += ["", f"Plans, {label} (train_batch_size 4, neg_num 4, item_max_tokens 24, lora_layers 10, "
                     "batch_max_tokens 4096, evaluation uni99 kv; GiB per GPU, bf16):", "",
                     plan_table(plans(tokens, paradigm))]
    out = "\n".join(text)
    print(out)
    if args.record:
        record("Memory plan: traced steps against the CPU allocator, and 7-8B plans (#46)",
               "python benchmarks/memory_trace.py " + " ".join(a for a in sys.argv[1:] if a != "--record"), out)


if __name__ == "__main__":
    main()
