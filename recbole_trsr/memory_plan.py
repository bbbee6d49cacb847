"""Per-GPU memory of an LLM run before the run: its own training and evaluation steps traced on fake
tensors (no weights read), per lever, and which levers fit 24, 40 and 80 GB.

    python -m recbole_trsr.memory_plan --llm_path=/models/Meta-Llama-3-8B-Instruct
    python -m recbole_trsr.memory_plan --llm_path=tests/data/configs/Qwen2.5-7B-Instruct/config.json \\
        --config_files=properties/recipe/LLMTRSR.yaml --prompt_max_tokens=2048

``llm_path`` is a model folder, a hub id in the local cache, or just a ``config.json``. The run's
settings are layered as a run's are (the model's YAML, ``--config_files``, then ``--key=value``).
What each column is, and how it is obtained:

* **weights** (computed): every parameter of the architecture in ``llm_dtype``; with 8-bit the
  decoder's linear layers at 1 byte a weight plus an fp32 scale a row, with 4-bit NF4 at half a byte
  plus double-quantized absmax scales (an 8-bit scale per 64 weights and an fp32 one per 256 of
  those), every other parameter in fp32 (peft's k-bit preparation casts them);
* **adapters + optimizer** (traced): LoRA / AdaLoRA weights and the optimizer's state;
* **training step** (traced): the peak above those of a steady-state step as the trainer runs it,
  one batch of ``train_batch_size`` prompts of ``prompt_max_tokens`` (or ``--prompt_tokens``) with
  ``1 + neg_num`` candidates of ``item_max_tokens``, or with ``--from_dataset`` the longest prompts the
  dataset makes (the model's own prompt builder), packed and cut into ``batch_max_tokens``
  micro-batches exactly as the scorer does; a k-bit run adds (computed) its largest linear layer
  dequantized in the compute dtype, the transient bitsandbytes makes in each forward and backward;
* **evaluation step** (traced): ``kv`` scoring of one user's candidates (``eval_args`` mode);
* **summarizing** (traced): the loop decoder's largest batch as CUDA runs it (fused attention, keys
  by position), filling ``summary_batch_max_tokens`` with prompts of ``summary_prompt_max_tokens`` and
  with short block prompts (the most rows), ``summary_max_new_tokens`` each; its key/value buffers
  are allocated for every new token before the prefill, so the prefill and two decode steps hold the
  peak. Plus the weights, in the recommender's shape (a ``summary_llm_path`` of another shape: plan
  it with that path). Left out when no summarizer runs in the process (``summary_paradigm: none``,
  ``summary_engine: server``). The untraced fallback computes the key/value buffers alone.

**Margin** (stated, not traced): ``CONTEXT_GIB`` for the CUDA context, cuBLAS / cuDNN workspaces and
the NCCL buffers of a multi-GPU run, none of which ``torch.cuda.max_memory_allocated`` counts, and
``ALLOCATOR_SLACK`` of the peak for the caching allocator's fragmentation. A lever set fits a card
when ``peak x (1 + ALLOCATOR_SLACK) + CONTEXT_GIB`` is at most the card's memory.

Where a trace cannot run (an architecture transformers cannot build on meta, an op without a fake
kernel) the activations fall back to :mod:`recbole_trsr.llm.memory_estimate`, labelled "estimate".
"""
import argparse
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from recbole_trsr.llm import memory_estimate, memory_trace
from recbole_trsr.llm.adapters import adalora_config, lora_config

logger = logging.getLogger(__name__)

GIB = 2 ** 30
BYTES = memory_estimate.BYTES
CARDS_GB = (24, 40, 80)
CONTEXT_GIB = 1.0
ALLOCATOR_SLACK = 0.10
ANSWER_TAIL_TOKENS = 8  # after the candidate's text: the question's end and the answer position
SHORT_BLOCK_PROMPT_TOKENS = 64  # a short summarizer prompt: the most rows one batch holds
LEVERS = [("none", dict(micro=False, ckpt=False, quant=None)),
          ("backward_per_micro_batch", dict(micro=True, ckpt=False, quant=None)),
          ("+ gradient_checkpointing", dict(micro=True, ckpt=True, quant=None)),
          ("+ llm_quantization: 8bit", dict(micro=True, ckpt=True, quant="8bit")),
          ("+ llm_quantization: 4bit", dict(micro=True, ckpt=True, quant="4bit"))]
model_config = memory_estimate.model_config


def weight_bytes(linear, other, dtype):
    """Bytes of the weights for each ``llm_quantization``: ``linear`` parameters of the decoder's linear
    layers (``(count, rows)``), ``other`` the rest."""
    count, rows = linear
    nf4 = count * 0.5 + count / 64 * 1 + count / 64 / 256 * 4 + 256 * 4  # codes, 8-bit absmax, fp32 second level
    return {None: (count + other) * BYTES[dtype], "8bit": count * 1 + rows * 4 + other * 4, "4bit": nf4 + other * 4}


def linear_counts(config):
    """``((parameters, rows), other, largest)``: the decoder layers' linear weights, every other
    parameter, and the largest linear weight's element count."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linears = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    count = sum(w.numel() for w in linears)
    total = sum(p.numel() for p in model.parameters())
    return (count, sum(w.shape[0] for w in linears)), total - count, max(w.numel() for w in linears)


def eval_candidates(run):
    """Candidates scored for one evaluation user: 1 + N for ``uniN`` / ``popN``, ``full_sort_top_m`` for full."""
    mode = (run.get("eval_args") or {}).get("mode", "uni99")
    mode = mode.get("test", "uni99") if isinstance(mode, dict) else mode
    if mode == "full":
        return int(run.get("full_sort_top_m") or 50)
    return 1 + int("".join(ch for ch in mode if ch.isdigit()) or 99)


def prompt_shapes(run, prompt_tokens=None):
    """``(training shapes, evaluation shape)``: ``(prefix tokens, [candidate tokens, ...])`` per prompt."""
    suffix = int(run["item_max_tokens"]) + ANSWER_TAIL_TOKENS
    prefix = int(prompt_tokens or run["prompt_max_tokens"]) - suffix
    if prefix <= 0:
        raise ValueError(f"prompt_max_tokens={run['prompt_max_tokens']} leaves no room for a candidate of {suffix} tokens")
    train = [(prefix, [suffix] * (1 + int(run["neg_num"])))] * int(run["train_batch_size"])
    return train, (prefix, [suffix] * eval_candidates(run))


def dataset_prompt_shapes(config, train_batch_size, neg_num, candidates):
    """``(training shapes, evaluation shape)`` of the longest prompts the dataset makes, built by the
    model's own prompt builder from the dataset's histories: the ``train_batch_size`` longest training
    prompts, each with its target and ``neg_num`` candidates of the longest item text, and the longest
    test prompt with ``candidates`` of it. A summary is as long as ``summary_max_tokens`` allows (the
    store is not read). Needs the model's tokenizer (a folder or hub id, not a bare config.json)."""
    from recbole.data import data_preparation

    from recbole_trsr.data import HISTORY_POSITION_FIELD, ItemTextTable, create_dataset
    from recbole_trsr.llm.backbone import load_tokenizer
    from recbole_trsr.model.llmtrsr import prompt_builder
    from recbole_trsr.summarize.segment import recent_window

    tokenizer = load_tokenizer(config["llm_path"], config["trsr_cache_dir"])
    train, _, _ = data_preparation(config, create_dataset(config))
    dataset = train._dataset
    prompts = prompt_builder(config, dataset, tokenizer, ItemTextTable.from_dataset(dataset))
    histories = dataset.user_histories
    summary = None if config["summary_paradigm"] == "none" else "preferences " * (2 * int(config["summary_max_tokens"]))

    def prompt(user, position, items):
        start, end = recent_window(position, config["recent_items"], config["block_size"])
        prefix, suffixes = prompts.build(summary, histories.items_before(user, end)[start:], items)
        return len(prefix), [len(s) for s in suffixes]

    inter = dataset.inter_feat
    rows = zip(inter[dataset.uid_field].tolist(), inter[HISTORY_POSITION_FIELD].long().tolist(),
               inter[dataset.iid_field].tolist())
    examples = sorted((prompt(u, p, [t]) for u, p, t in rows), reverse=True)
    users = histories.users()
    longest_item = max(prompt(users[0], 0, list(range(1, dataset.item_num)))[1])
    train_shapes = [(p, s + [longest_item] * neg_num) for p, s in examples[:train_batch_size]]
    last = max(prompt(u, histories.length(u) - 1, [1])[0] for u in users)
    return train_shapes, (last, [longest_item] * candidates)


def adapters_for(run, config):
    if run.get("model") == "DELRec":
        return adalora_config(run, 1000)
    return lora_config(run, config.num_hidden_layers)


LEVER_TRACES = (("none", False, False, None), ("micro", True, False, None), ("ckpt", True, True, None),
                ("8bit", True, True, "8bit"), ("4bit", True, True, "4bit"))  # key, micro, checkpointing, k-bit


def trace_lever(config, run, dtype, shapes, micro, ckpt, kbit):
    """``(training StepTrace, evaluation StepTrace, FakeLLM weight bytes)`` of one lever set."""
    train, evaluate = shapes
    groups = memory_trace.synthetic_groups(train, config.vocab_size)
    labels = [0] + [1] * int(run["neg_num"])
    scorer = dict(answer_ids=(0, 1), mode="packed", pack_max_tokens=int(run["pack_max_tokens"]),
                  batch_max_tokens=int(run["batch_max_tokens"]))
    fake = memory_trace.fake_llm(config, getattr(torch, dtype), adapters_for(run, config), ckpt, kbit=kbit)
    step = memory_trace.trace_training(fake, groups, labels * len(groups), scorer, micro,
                                       learner=run.get("learner") or "adam", clip_grad_norm=run.get("clip_grad_norm"))
    evaluation = memory_trace.trace_evaluation(fake, memory_trace.synthetic_groups([evaluate], config.vocab_size)[0],
                                               dict(scorer, mode="kv"))
    return step, evaluation, fake.weight_bytes


def trace_all(config, run, dtype, shapes, workers=1):
    """``(levers, summarizing)``: :func:`trace_lever` per ``LEVER_TRACES`` key, and the bytes above the
    weights of the summarizer's largest batch (None when none runs here). Each trace is independent and
    spends its time in Python dispatch on one core, so ``workers`` > 1 runs them in that many spawned
    processes, longest first (checkpointed levers recompute, so they take the longest); the bytes are
    the same either way (tested)."""
    jobs = [(key, trace_lever, (config, run, dtype, shapes, micro, ckpt, kbit))
            for key, micro, ckpt, kbit in sorted(LEVER_TRACES, key=lambda lever: not lever[2])]
    if summarizes_here(run):
        jobs += [(("summarizer", i), trace_summarizer_batch, (config, run, dtype, rows, length))
                 for i, (rows, length) in enumerate(summarizer_batches(run))]
    if workers <= 1:
        done = {key: fn(*args) for key, fn, args in jobs}
    else:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {key: pool.submit(fn, *args) for key, fn, args in jobs}
            done = {key: future.result() for key, future in futures.items()}
    summarizing = [v for key, v in done.items() if isinstance(key, tuple)]
    return {key: done[key] for key, *_ in LEVER_TRACES}, (max(summarizing) if summarizing else None)


def summarizes_here(run):
    """Whether this process runs a summarizer (so its batches share the GPU's memory)."""
    return run.get("summary_paradigm") not in (None, "none") and (run.get("summary_engine") or "local") != "server"


def summarizer_batches(run):
    """``[(rows, prompt tokens), ...]``: the summarizer's largest batches, each filling
    ``summary_batch_max_tokens`` (prompt + new tokens of every row), of its longest and of short prompts."""
    budget = int(run.get("summary_batch_max_tokens") or 24576)
    new = int(run.get("summary_max_new_tokens") or 48)
    lengths = (int(run.get("summary_prompt_max_tokens") or 768), SHORT_BLOCK_PROMPT_TOKENS)
    return [(max(1, budget // (length + new)), length) for length in lengths]


def trace_summarizer_batch(config, run, dtype, rows, prompt_tokens):
    """Traced bytes above the weights of one summarizer batch of ``rows`` prompts of ``prompt_tokens``
    (:func:`summarizer_batches`), on the decoder settings of a CUDA device."""
    fake = memory_trace.fake_llm(config, getattr(torch, dtype))
    new = int(run.get("summary_max_new_tokens") or 48)
    settings = dict(batch_max_tokens=int(run.get("summary_batch_max_tokens") or 24576), attention=None,
                    key_layout="positions", sync_every=new + 1)
    return memory_trace.trace_summarizing(fake, rows, prompt_tokens, new, settings).step


def plan(llm_path, run, prompt_tokens=None, trace=True, shapes=None, workers=1):
    """The whole plan (bytes) for a run's settings ``run`` (a dict of config values). ``shapes``: the
    prompts (:func:`dataset_prompt_shapes`); default the longest ``prompt_max_tokens`` (or
    ``prompt_tokens``) allows (:func:`prompt_shapes`). ``workers``: processes for the traces (:func:`trace_all`)."""
    shapes = shapes or prompt_shapes(run, prompt_tokens)
    config = model_config(llm_path)
    dtype = run["llm_dtype"] if run.get("llm_dtype") not in (None, "auto") else "bfloat16"
    linear, other, largest = linear_counts(config)
    weights = weight_bytes(linear, other, dtype)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * kv_heads * head_dim * BYTES[dtype] * int(run.get("summary_batch_max_tokens") or 24576)
    estimate = estimate_levers(llm_path, run, weights, prompt_tokens)
    began = time.monotonic()
    traced, failure, summarizing = None, None, kv
    if trace:
        try:
            traced, traced_summarizing = trace_all(config, run, dtype, shapes, workers)
            summarizing = kv if traced_summarizing is None else traced_summarizing
        except Exception as exc:  # noqa: BLE001 - any op without a fake kernel: fall back, and say so
            failure = f"{type(exc).__name__}: {exc}"
            logger.warning("memory trace failed (%s); the activations are the estimate", failure)
    levers = []
    for name, lever in LEVERS:
        row = dict(name=name, weights=weights[lever["quant"]], estimate_train=estimate[name])
        if traced is not None:
            key = lever["quant"] or ("ckpt" if lever["ckpt"] else "micro" if lever["micro"] else "none")
            step, evaluation, fake_weights = traced[key]
            dequantized = largest * BYTES[dtype] if lever["quant"] else 0
            row["state"] = step.resident - fake_weights - _buffers(config, dtype)
            row["train_step"] = step.step + dequantized
            row["eval_step"] = evaluation.step + dequantized
            row["train"] = row["weights"] + row["state"] + row["train_step"]
            row["evaluate"] = row["weights"] + row["eval_step"]
        else:
            row["train"] = estimate[name]
            row["evaluate"] = None
        if summarizes_here(run):
            row["summarize"] = weights[lever["quant"]] + summarizing + (largest * BYTES[dtype] if lever["quant"] else 0)
        else:
            row["summarize"] = None
        row["peak"] = max(v for v in (row["train"], row["evaluate"], row["summarize"]) if v is not None)
        levers.append(row)
    return dict(dtype=dtype, layers=config.num_hidden_layers, parameters=linear[0] + other, kv_cache=kv,
                summarizing=summarizing if summarizes_here(run) else None, traced=traced is not None, failure=failure, trace_seconds=time.monotonic() - began,
                workers=workers,
                shapes=shapes, levers=levers)


def _buffers(config, dtype):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return sum(b.numel() * b.element_size() for b in model.buffers())


def estimate_levers(llm_path, run, weights, prompt_tokens=None):
    """Today's estimate of each lever's training peak (weights + LoRA state + activations + head)."""
    config = model_config(llm_path)
    dtype = run["llm_dtype"] if run.get("llm_dtype") not in (None, "auto") else "bfloat16"
    adapted = int(run.get("lora_layers") or config.num_hidden_layers)
    targets = list(run.get("lora_target_modules") or ["q_proj", "k_proj", "v_proj", "o_proj"])
    r = int(run.get("lora_r") or 8)
    lora = memory_estimate.lora_parameters(config, r, targets, adapted) * 4 * BYTES[dtype]
    full = memory_estimate.activation_bytes_per_token(config, dtype, r, targets)
    kept = memory_estimate.activation_bytes_per_token(config, dtype, r, targets, checkpointed=True)
    example_tokens = int(prompt_tokens or run["prompt_max_tokens"]) + (1 + int(run["neg_num"])) * (
        int(run["item_max_tokens"]) + ANSWER_TAIL_TOKENS)
    batch_tokens = int(run["train_batch_size"]) * example_tokens
    micro_tokens = min(batch_tokens, max(int(run["batch_max_tokens"]), example_tokens))
    head = (1 + int(run["neg_num"])) * int(run["train_batch_size"]) * config.vocab_size * (BYTES[dtype] + 8)
    out = {}
    for name, lever in LEVERS:
        tokens = micro_tokens if lever["micro"] else batch_tokens
        activations = (kept * adapted + full) * tokens if lever["ckpt"] else full * adapted * tokens
        out[name] = weights[lever["quant"]] + lora + activations + head
    return out


def fits(peak, card_gb):
    """Whether ``peak`` bytes fit a ``card_gb`` card with the stated margin."""
    return peak * (1 + ALLOCATOR_SLACK) + CONTEXT_GIB * GIB <= card_gb * GIB


def render(p, llm_path):
    gib = lambda b: "-" if b is None else f"{b / GIB:.2f}"  # noqa: E731
    train, evaluate = p["shapes"]
    lengths = sorted({pre + sum(suf) for pre, suf in train})
    processes = f", {p['workers']} processes" if p["workers"] > 1 else ""
    how = (f"traced on fake tensors in {p['trace_seconds']:.0f} s{processes}" if p["traced"] else
           f"ESTIMATE (the trace failed: {p['failure']})" if p["failure"] else "ESTIMATE (--no_trace)")
    lines = [f"memory plan for {llm_path}: {p['parameters'] / 1e9:.2f}B parameters, {p['layers']} layers, {p['dtype']}; "
             f"{how}",
             f"training batch: {len(train)} prompts, prefix {train[0][0]} + {len(train[0][1])} candidates "
             f"(up to {lengths[-1]} tokens a prompt); "
             f"evaluation: one user, {evaluate[0]} + {len(evaluate[1])} x {evaluate[1][0]} tokens (kv)",
             _summarizer_line(p), "",
             "GiB per GPU:", "",
             "| levers (cumulative) | weights (computed) | adapters + optimizer | training step | evaluation step | "
             "training peak | summarizing | today's estimate | " + " | ".join(f"fits {c} GB" for c in CARDS_GB) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(CARDS_GB)]
    for lv in p["levers"]:
        cells = [lv["name"], gib(lv["weights"]), gib(lv.get("state")), gib(lv.get("train_step")), gib(lv.get("eval_step")),
                 gib(lv["train"]), gib(lv["summarize"]), gib(lv["estimate_train"])]
        cells += ["yes" if fits(lv["peak"], c) else "no" for c in CARDS_GB]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"margin: {CONTEXT_GIB:.1f} GiB (CUDA context, workspaces) + {ALLOCATOR_SLACK:.0%} of the peak "
                 "(allocator slack); k-bit rows: weights computed, activations traced with the linear layers in the "
                 "compute dtype and the rest in fp32, plus the largest layer dequantized (computed)")
    for card in CARDS_GB:
        first = next((lv["name"] for lv in p["levers"] if fits(lv["peak"], card)), None)
        lines.append(f"{card} GB: " + (f"fits with {first}" if first else "does not fit with these levers; "
                                       + _what_decides(min(p["levers"], key=lambda lv: lv["peak"]))))
    return "\n".join(lines)


def _summarizer_line(p):
    if p["summarizing"] is None:
        return "summarizer: none in this process (summary_paradigm: none, or summary_engine: server)"
    how = "traced" if p["traced"] else "its key/value buffers alone, computed"
    return (f"summarizer: its largest batch {p['summarizing'] / GIB:.2f} GiB above the weights ({how}; "
            f"key/value buffers {p['kv_cache'] / GIB:.2f} GiB of it)")


def _what_decides(lever):
    phase = max(("train", "evaluate", "summarize"), key=lambda k: lever[k] or 0)
    return {"train": "training decides: lower train_batch_size / batch_max_tokens / prompt_max_tokens, or lora_layers",
            "evaluate": "evaluation decides (kv scoring holds the prefix's keys, and one layer's prefix + candidate "
                        "keys per candidate row at a time): lower batch_max_tokens, which caps the rows scored at once",
            "summarize": "summarizing decides: lower summary_batch_max_tokens, or summarize apart "
                         "(summary_engine: server)"}[phase]


PLAN_KEYS = ("model", "llm_dtype", "lora_layers", "lora_target_modules", "lora_r", "lora_alpha", "lora_dropout",
             "adalora_init_r", "adalora_target_r", "prompt_max_tokens", "neg_num", "item_max_tokens", "train_batch_size",
             "batch_max_tokens", "pack_max_tokens", "summary_batch_max_tokens", "summary_max_new_tokens",
             "summary_prompt_max_tokens", "summary_paradigm", "summary_engine", "eval_args", "full_sort_top_m",
             "learner", "clip_grad_norm")


def main(argv=None):
    from recbole_trsr.config import TRSRConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm_path", required=True, help="model folder, cached hub id, or config.json")
    parser.add_argument("--model", default="LLMTRSR")
    parser.add_argument("--dataset", default="ml-100k", help="only for the dataset's YAML, if any; no data is read")
    parser.add_argument("--config_files", default="")
    parser.add_argument("--prompt_tokens", type=int, default=None,
                        help="tokens of a training prompt (default: prompt_max_tokens, the longest a run allows)")
    parser.add_argument("--from_dataset", action="store_true",
                        help="the longest prompts the dataset makes (reads data_path and the model's tokenizer)")
    parser.add_argument("--no_trace", action="store_true", help="only today's estimate (seconds, not minutes)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for the traces, one lever each (default: every core; 1: in this process)")
    args, overrides = parser.parse_known_args(argv)
    config = TRSRConfig(args.model, args.dataset, config_file_list=args.config_files.split() or None,
                        config_dict={"llm_path": args.llm_path}, argv=overrides)
    run = {k: config[k] for k in PLAN_KEYS}
    shapes = None
    if args.from_dataset:
        shapes = dataset_prompt_shapes(config, int(run["train_batch_size"]), int(run["neg_num"]), eval_candidates(run))
    print(render(plan(args.llm_path, run, args.prompt_tokens, trace=not args.no_trace, shapes=shapes, workers=args.workers),
                 args.llm_path))


if __name__ == "__main__":
    main()
