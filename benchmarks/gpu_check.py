"""The GPU check: one short run that sizes the plugin on a GPU (#35), ready for a lent machine.

    python benchmarks/gpu_check.py --prepare                 # here: writes .gpu/ (what a bare GPU machine lacks)
    python benchmarks/gpu_check.py --out DIR                 # there: about 5 minutes on one H200
    python benchmarks/gpu_check.py --reduced --out DIR       # CPU, tiny shapes: what the test suite runs

A bare GPU machine has torch, transformers and peft but not the plugin's data, model or bitsandbytes,
and nothing can be downloaded there, so ``--prepare`` writes ``.gpu/`` (in .gitignore, carried to the
machine): the 256 ml-100k-plot block prompts of ``benchmarks/summarize.py``, SmolLM2's tokenizer and
``config.json`` (its weights are too large to carry: the model is random-init with its shape, which
times the same; random weights never stop early, so every summary runs its 48 new tokens), and
bitsandbytes as a wheel. The device call (its README) is then::

    pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl; PYTHONPATH=/tmp/site:. \\
        python3 benchmarks/gpu_check.py --out $OUT      (carry: [".gpu"])

It writes ``gpu_check.json`` and ``gpu_check.md`` with, in the run's dtype (bf16 on a GPU):

* summaries/s of the loop decoder and of ``generate`` (batches of 16) on the benchmark's prompts;
* training steps/s and peak memory (CUDA's max allocated) for SmolLM2's shape and a 1B Llama shape,
  with the graph kept for one backward ("today"), per-micro-batch backward, + gradient checkpointing,
  + 4-bit weights; beside each, the step's peak above what is resident (weights, adapters, optimizer
  state) against the memory plan's trace of the same step (``recbole_trsr.memory_plan``, #46);
* kv scoring users/s (1 + 20 candidates a user) against packed scoring, and one user's kv scoring
  peak above the weights against the memory plan's trace of it.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GPU_DIR = ROOT / ".gpu"
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=32000)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
LEVERS = (("today", False, False, None), ("micro", True, False, None), ("ckpt", True, True, None),
          ("4bit", True, True, "4bit"))


def prepare():
    """``.gpu/``: prompts, SmolLM2's tokenizer and config, the bitsandbytes wheel."""
    import subprocess

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import load_default_backbone
    from summarize import prompts

    GPU_DIR.mkdir(exist_ok=True)
    backbone = load_default_backbone("float32")
    folder = Path(backbone.path if Path(backbone.path).is_dir() else backbone.identity.split("#")[0])
    model_dir = GPU_DIR / "smollm2-shape"
    model_dir.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, model_dir / name)
    (GPU_DIR / "prompts.json").write_text(json.dumps(prompts(backbone.tokenizer)))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                    str(GPU_DIR), "bitsandbytes==0.50.2"], check=True)
    print(f"wrote {GPU_DIR}: " + ", ".join(sorted(p.name for p in GPU_DIR.iterdir())))


def random_model(shape_dir, overrides, dtype, device, quantization=None):
    """A random-init causal LM of the config in ``shape_dir`` (with ``overrides``), saved once and loaded
    through the plugin's loader (so 4-bit goes the product's way)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from recbole_trsr.llm.backbone import load_backbone

    tag = "-".join(f"{k}{v}" for k, v in sorted(overrides.items())) or "as-is"
    folder = Path(shape_dir).parent / "models" / f"{Path(shape_dir).name}-{tag}"
    if not (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(shape_dir)
        for k, v in overrides.items():
            setattr(config, k, v)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (Path(shape_dir) / name).is_file():
                shutil.copy(Path(shape_dir) / name, folder / name)
    return load_backbone(str(folder), dtype=dtype, device=device, quantization=quantization)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def summaries(shape_dir, overrides, prompts, dtype, device, new_tokens):
    from recbole_trsr.llm.generation import LLMGenerator

    backbone = random_model(shape_dir, overrides, dtype, device)
    out = {}
    for name, kwargs, per_call in (("loop", dict(decoder="loop"), len(prompts)), ("generate-16", dict(decoder="hf"), 16)):
        gen = LLMGenerator(backbone.model, backbone.tokenizer, max_new_tokens=new_tokens, **kwargs)
        gen(prompts[:2])  # warm-up
        sync(device)
        start = time.perf_counter()
        for s in range(0, len(prompts), per_call):
            gen(prompts[s:s + per_call])
        sync(device)
        out[name] = len(prompts) / (time.perf_counter() - start)
    return out


def groups(vocab, users, prefix, candidates, item_tokens, seed=0):
    from recbole_trsr.llm.scoring import Group

    g = torch.Generator().manual_seed(seed)
    return [Group(torch.randint(10, vocab, (prefix,), generator=g).tolist(),
                  [torch.randint(10, vocab, (item_tokens,), generator=g).tolist() for _ in range(candidates)])
            for _ in range(users)]


def training(shape_dir, overrides, dtype, device, rows, prefix, batch_max_tokens, steps, quant_ok):
    from peft import LoraConfig, get_peft_model

    from recbole_trsr.llm.memory import peak_memory, prepare_for_training, reset_peak_memory
    from recbole_trsr.llm.scoring import AnswerScorer

    out = {}
    for name, micro, ckpt, quant in LEVERS:
        if quant and not quant_ok:
            out[name] = {"skipped": "bitsandbytes not importable"}
            continue
        backbone = random_model(shape_dir, overrides, dtype, device, quantization=quant)
        model = get_peft_model(prepare_for_training(backbone.model, ckpt),
                               LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        scorer = AnswerScorer(model, 5, 6, 0, mode="packed", batch_max_tokens=batch_max_tokens)
        data = groups(model.config.vocab_size, rows, prefix, 5, 24)
        labels = torch.tensor([5, 6, 6, 6, 6] * rows, device=device)

        def step():
            loss = scorer.answer_loss(data, labels, backward_scale=1.0 if micro else None)
            if not micro:
                loss.backward()
            opt.step()
            opt.zero_grad()

        step()  # warm-up: the optimizer's state exists from here on
        sync(device)
        resident = torch.cuda.memory_allocated(device) if torch.device(device).type == "cuda" else None
        reset_peak_memory(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        seconds = (time.perf_counter() - start) / steps
        peak, what = peak_memory(device)
        out[name] = {"steps_per_s": 1 / seconds, "tokens_per_step": scorer.tokens_seen // (steps + 1),
                     "peak_gib": peak / 2 ** 30, "peak_is": what,
                     "traced_step_gib": traced_step(model.config, dtype, ckpt, quant, data, labels.tolist(),
                                                    batch_max_tokens, micro) / 2 ** 30}
        if resident is not None:  # the step's own peak above weights, adapters and optimizer state
            out[name]["measured_step_gib"] = (peak - resident) / 2 ** 30
        del model, opt, scorer, backbone
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return out


def traced_step(config, dtype, ckpt, quant, data, labels, batch_max_tokens, micro):
    """The memory plan's trace of the same step (recbole_trsr/llm/memory_trace.py), on fake tensors."""
    from peft import LoraConfig

    from recbole_trsr.llm import memory_trace

    fake = memory_trace.fake_llm(config, getattr(torch, dtype), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        ckpt, kbit=quant)
    return memory_trace.trace_training(fake, data, labels, dict(answer_ids=(5, 6), mode="packed",
                                                                batch_max_tokens=batch_max_tokens),
                                       micro, learner="adamw").step


def scoring(shape_dir, overrides, dtype, device, users, prefix):
    from recbole_trsr.llm.scoring import AnswerScorer

    backbone = random_model(shape_dir, overrides, dtype, device)
    data = groups(backbone.model.config.vocab_size, users, prefix, 21, 24, seed=1)
    out = {}
    with torch.no_grad():
        for mode in ("kv", "packed"):
            scorer = AnswerScorer(backbone.model, 5, 6, 0, mode=mode)
            scorer.yes_no_logits(data[:1])
            sync(device)
            start = time.perf_counter()
            scorer.yes_no_logits(data)
            sync(device)
            out[mode] = users / (time.perf_counter() - start)
        out["kv_memory"] = kv_memory(backbone.model, data[0], dtype, device)
    return out


def kv_memory(model, group, dtype, device):
    """One user's kv scoring: its peak above the weights (CUDA's max allocated; the allocator's on a CPU)
    against the memory plan's trace of the same scoring (``memory_trace.trace_evaluation``)."""
    from recbole_trsr.llm import memory_trace
    from recbole_trsr.llm.scoring import AnswerScorer

    scorer = AnswerScorer(model, 5, 6, 0, mode="kv")
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        scorer.yes_no_logits([group])
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated() - resident
    else:
        measured = memory_trace.allocator_peak(lambda: scorer.yes_no_logits([group]))
    fake = memory_trace.fake_llm(model.config, getattr(torch, dtype))
    traced = memory_trace.trace_evaluation(fake, group, dict(answer_ids=(5, 6), mode="kv")).step
    return {"measured_gib": measured / 2 ** 30, "traced_gib": traced / 2 ** 30,
            "tokens": f"{len(group.prefix)} + {len(group.suffixes)} x {len(group.suffixes[0])}"}


def markdown(result):
    lines = [f"# GPU check ({result['device']}, {result['dtype']}, {result['date']})", "",
             f"torch {result['torch']}, transformers {result['transformers']}, peft {result['peft']}; "
             f"{'reduced (CPU test) mode' if result['reduced'] else 'full mode'}", "",
             "| summarizer | summaries/s | vs generate-16 |", "|---|---|---|"]
    s = result["summaries"]
    lines += [f"| {k} | {v:.2f} | {v / s['generate-16']:.2f}x |" for k, v in s.items()]
    for model, levers in result["training"].items():
        lines += ["", f"| training, {model} | steps/s | tokens/step | peak (GiB) | peak vs today | step above "
                  "resident, measured (GiB) | traced by memory_plan (GiB) | traced / measured |",
                  "|---|---|---|---|---|---|---|---|"]
        today = levers["today"].get("peak_gib")
        for name, r in levers.items():
            if "skipped" in r:
                lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | |")
            else:
                measured, traced = r.get("measured_step_gib"), r["traced_step_gib"]
                versus = f"{traced / measured:.3f}" if measured else "-"
                measured = "-" if measured is None else f"{measured:.3f}"
                lines.append(f"| {name} | {r['steps_per_s']:.2f} | {r['tokens_per_step']} | {r['peak_gib']:.2f} | "
                             f"{r['peak_gib'] / today:.2f}x | {measured} | {traced:.3f} | {versus} |")
    k = result["scoring"]
    lines += ["", "| scoring (1 + 20 candidates) | users/s |", "|---|---|"]
    lines += [f"| {mode} | {v:.1f} |" for mode, v in k.items() if mode != "kv_memory"]
    m = k["kv_memory"]
    lines += ["", f"kv scoring of one user ({m['tokens']} tokens), above the weights: measured "
              f"{m['measured_gib']:.3f} GiB, traced by memory_plan {m['traced_gib']:.3f} GiB "
              f"({m['traced_gib'] / m['measured_gib']:.3f}x)"]
    lines += ["", f"wall time: {result['wall_s']:.0f} s"]
    return "\n".join(lines) + "\n"


def check(out_dir, reduced, gpu_dir=GPU_DIR):
    import peft
    import transformers

    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    gpu_dir = Path(gpu_dir)
    shape = gpu_dir / "smollm2-shape"
    if not (shape / "config.json").is_file():
        raise SystemExit(f"{shape} is missing: run `python benchmarks/gpu_check.py --prepare` first")
    prompts = json.loads((gpu_dir / "prompts.json").read_text())
    try:
        import bitsandbytes  # noqa: F401
        quant_ok = True
    except ImportError:
        quant_ok = False
    small = dict(TINY) if reduced else {}
    big = dict(TINY, num_hidden_layers=3) if reduced else LLAMA_1B
    n, new, rows, prefix, budget, steps, users = ((8, 6, 2, 48, 96, 1, 3) if reduced else (256, 48, 8, 400, 2048, 3, 64))
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": dtype,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "transformers": transformers.__version__, "peft": peft.__version__, "reduced": reduced}
    result["summaries"] = summaries(shape, small, prompts[:n], dtype, device, new)
    result["training"] = {name: training(shape, o, dtype, device, rows, prefix, budget, steps, quant_ok)
                          for name, o in (("SmolLM2-135M shape", small), ("Llama 1B shape", big))}
    result["scoring"] = scoring(shape, small, dtype, device, users, prefix)
    result["wall_s"] = time.perf_counter() - started
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=1))
    (out_dir / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--reduced", action="store_true", help="tiny shapes (the CPU test)")
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--gpu_dir", default=str(GPU_DIR), help="what --prepare wrote")
    args = parser.parse_args()
    if args.prepare:
        prepare()
    else:
        check(args.out, args.reduced, args.gpu_dir)


if __name__ == "__main__":
    main()
