"""Expected per-GPU memory of an LLM run, before the run: which levers make it fit 24, 40 and 80 GB.

    python -m recbole_trsr.memory_plan --llm_path=meta-llama/Meta-Llama-3-8B-Instruct
    python -m recbole_trsr.memory_plan --llm_path=/models/qwen2.5-7b/config.json \\
        --config_files=properties/recipe/LLMTRSR.yaml --train_batch_size=4 --llm_dtype=bfloat16

``llm_path`` is a model folder, a hub id in the local cache, or just a ``config.json``: no weights are
read. The run's settings are layered as a run's are (the model's YAML, ``--config_files``, then
``--key=value``). The plan counts:

* weights: every parameter of the architecture (built on the meta device), in ``llm_dtype``; with
  ``llm_quantization`` the decoder's linear layers at 4 (NF4 + double-quantized scales) or 8 bits,
  the rest in fp32 (peft's k-bit preparation casts them);
* LoRA state: adapters, their gradients and AdamW's two moments;
* activations: the bytes autograd keeps per token per decoder layer, **measured** by running one
  decoder layer of the model's shape with its LoRA adapters on the CPU (saved-tensor hooks), times
  the layers that backpropagate (``lora_layers``), times the tokens alive at once: a whole batch
  today, one ``batch_max_tokens`` micro-batch with ``backward_per_micro_batch``; with
  ``gradient_checkpointing`` each layer keeps only its input, and one layer is recomputed at a time;
* the summarizer's key/value cache: ``summary_batch_max_tokens`` positions of every layer.

Not counted: the CUDA context and allocator slack (about 0.5-1.5 GB; the verdict keeps 10% + 1 GB
free), the attention mask of a packed micro-batch (``rows x T^2`` elements, shared by the layers).
``benchmarks/train_memory.py --plan`` compares the plan with peaks measured on CPU.
"""
import argparse
import json
import os
from pathlib import Path

import torch

GIB = 2 ** 30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LEVER_ORDER = [("none", dict(micro=False, ckpt=False, quant=None)),
               ("backward_per_micro_batch", dict(micro=True, ckpt=False, quant=None)),
               ("+ gradient_checkpointing", dict(micro=True, ckpt=True, quant=None)),
               ("+ llm_quantization: 8bit", dict(micro=True, ckpt=True, quant="8bit")),
               ("+ llm_quantization: 4bit", dict(micro=True, ckpt=True, quant="4bit"))]
CARDS_GB = (24, 40, 80)


def model_config(llm_path):
    """The architecture's ``PretrainedConfig`` from a folder, a ``config.json`` or a cached hub id."""
    from transformers import AutoConfig

    path = Path(os.path.expanduser(str(llm_path)))
    if path.is_file() and path.name.endswith(".json"):
        return AutoConfig.from_pretrained(str(path.parent)) if path.name == "config.json" else \
            AutoConfig.for_model(**json.loads(path.read_text()))
    return AutoConfig.from_pretrained(str(llm_path), local_files_only=True)


def parameter_counts(config):
    """``(quantizable, other)``: parameters of the decoder layers' linear layers, and all the rest."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in name)
    total = sum(p.numel() for p in model.parameters())
    return linear, total - linear


def lora_parameters(config, r, targets, n_layers):
    """LoRA's parameter count: r x (in + out) for each target linear of the adapted layers."""
    layer = _layer(config, device="meta")
    per_layer = sum(r * (m.in_features + m.out_features) for name, m in layer.named_modules()
                    if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets)
    return per_layer * n_layers


def _layer(config, device):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shape = AutoModelForCausalLM.from_config(_one_layer(config))
    decoder = getattr(shape, shape.base_model_prefix)
    with torch.device(device):
        return type(decoder.layers[0])(_one_layer(config), layer_idx=0)


def _one_layer(config):
    one = type(config).from_dict(config.to_dict())
    one.num_hidden_layers = 1
    one._attn_implementation = "sdpa"
    return one


def activation_bytes_per_token(config, dtype, r, targets, tokens=128, checkpointed=False):
    """Bytes autograd keeps per token for one decoder layer with LoRA, measured on the CPU: the
    layer of ``config``'s shape runs forward on ``tokens`` tokens under saved-tensor hooks, parameters
    left out. ``checkpointed``: only the layer's input is kept."""
    if checkpointed:
        return config.hidden_size * BYTES[dtype]
    from peft import LoraConfig, inject_adapter_in_model

    torch_dtype = getattr(torch, dtype)
    one = _one_layer(config)
    layer = _layer(config, device="cpu").to(torch_dtype)
    layer = inject_adapter_in_model(LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules=list(targets)),
                                    layer)
    for name, p in layer.named_parameters():
        p.requires_grad_("lora_" in name)
    rotary = _rotary(one)
    hidden = torch.randn(1, tokens, config.hidden_size, dtype=torch_dtype, requires_grad=True)
    positions = torch.arange(tokens)[None]
    cos_sin = rotary(hidden, positions)
    mask = torch.zeros(1, 1, tokens, tokens, dtype=torch_dtype).masked_fill(
        ~torch.ones(tokens, tokens, dtype=torch.bool).tril(), torch.finfo(torch_dtype).min)
    weights = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    layer.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
    out = out[0] if isinstance(out, tuple) else out
    seen[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()  # the next layer's input
    return sum(seen.values()) / tokens


def _rotary(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        shape = AutoModelForCausalLM.from_config(config)
    rotary = getattr(shape, shape.base_model_prefix).rotary_emb
    return type(rotary)(config=config)


def plan_training(llm_path, settings):
    """Bytes of activations + LoRA state (no weights) per lever, for ``benchmarks/train_memory.py``:
    ``{"today", "micro", "ckpt"}``. ``settings``: batch_tokens, micro_batch_tokens, dtype, lora_r,
    lora_targets, and optionally lora_layers."""
    config = model_config(llm_path)
    n = settings.get("lora_layers") or config.num_hidden_layers
    dtype = settings["dtype"]
    lora = lora_parameters(config, settings["lora_r"], settings["lora_targets"], n) * 4 * BYTES[dtype]
    full = activation_bytes_per_token(config, dtype, settings["lora_r"], settings["lora_targets"])
    kept = activation_bytes_per_token(config, dtype, settings["lora_r"], settings["lora_targets"], checkpointed=True)
    micro = settings["micro_batch_tokens"]
    return {"today": lora + full * n * settings["batch_tokens"], "micro": lora + full * n * micro,
            "ckpt": lora + (kept * n + full) * micro}


def plan(llm_path, run):
    """The whole plan (bytes) for a run's settings ``run`` (a dict of config values)."""
    config = model_config(llm_path)
    dtype = run["llm_dtype"] if run.get("llm_dtype") not in (None, "auto") else "bfloat16"
    n_layers = config.num_hidden_layers
    adapted = int(run.get("lora_layers") or n_layers)
    targets = list(run.get("lora_target_modules") or ["q_proj", "k_proj", "v_proj", "o_proj"])
    r = int(run.get("lora_r") or 8)
    linear, other = parameter_counts(config)
    weights = {None: (linear + other) * BYTES[dtype],
               "8bit": linear * 1.0 + other * 4,
               "4bit": linear * (0.5 + 0.127 / 8) + other * 4}  # NF4 + double-quantized absmax, others fp32
    lora = lora_parameters(config, r, targets, adapted) * 4 * BYTES[dtype]  # weight, grad, AdamW m and v
    full = activation_bytes_per_token(config, dtype, r, targets)
    kept = activation_bytes_per_token(config, dtype, r, targets, checkpointed=True)
    example_tokens = int(run["prompt_max_tokens"]) + (1 + int(run["neg_num"])) * (int(run["item_max_tokens"]) + 8)
    batch_tokens = int(run["train_batch_size"]) * example_tokens
    micro_tokens = min(batch_tokens, max(int(run["batch_max_tokens"]), example_tokens))
    head = (1 + int(run["neg_num"])) * int(run["train_batch_size"]) * config.vocab_size * (BYTES[dtype] + 8)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = 2 * n_layers * kv_heads * head_dim * BYTES[dtype] * int(run.get("summary_batch_max_tokens") or 24576)
    levers = []
    for name, lever in LEVER_ORDER:
        tokens = micro_tokens if lever["micro"] else batch_tokens
        activations = (kept * adapted + full) * tokens if lever["ckpt"] else full * adapted * tokens
        train = weights[lever["quant"]] + lora + activations + head
        summarize = weights[lever["quant"]] + kv
        levers.append(dict(name=name, weights=weights[lever["quant"]], lora=lora, activations=activations + head,
                           train=train, summarize=summarize, peak=max(train, summarize)))
    return dict(dtype=dtype, layers=n_layers, adapted=adapted, parameters=linear + other, batch_tokens=batch_tokens,
                micro_tokens=micro_tokens, bytes_per_token_layer=full, kept_per_token_layer=kept, kv_cache=kv,
                levers=levers)


def fits(peak, card_gb):
    return peak <= card_gb * GIB * 0.9 - GIB


def render(p, llm_path):
    lines = [f"memory plan for {llm_path}: {p['parameters'] / 1e9:.2f}B parameters, {p['layers']} layers "
             f"({p['adapted']} with LoRA), {p['dtype']}",
             f"tokens alive: a batch {p['batch_tokens']}, a micro-batch {p['micro_tokens']}; autograd keeps "
             f"{p['bytes_per_token_layer'] / 1024:.0f} KiB per token per layer ({p['kept_per_token_layer'] / 1024:.0f} "
             f"KiB checkpointed); summarizer KV cache {p['kv_cache'] / GIB:.1f} GiB", "",
             "| levers (cumulative) | weights | LoRA state | activations | training | summarizing | "
             + " | ".join(f"fits {c} GB" for c in CARDS_GB) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(CARDS_GB)]
    for lever in p["levers"]:
        cells = [lever["name"]] + [f"{lever[k] / GIB:.1f} GiB" for k in ("weights", "lora", "activations", "train",
                                                                           "summarize")]
        cells += ["yes" if fits(lever["peak"], c) else "no" for c in CARDS_GB]
        lines.append("| " + " | ".join(cells) + " |")
    for card in CARDS_GB:
        first = next((lv["name"] for lv in p["levers"] if fits(lv["peak"], card)), None)
        lines.append(f"{card} GB: " + (f"fits with {first}" if first else "does not fit with these levers: lower "
                                       "train_batch_size / batch_max_tokens / prompt_max_tokens, or lora_layers"))
    return "\n".join(lines)


def main(argv=None):
    from recbole_trsr.config import TRSRConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm_path", required=True, help="model folder, cached hub id, or config.json")
    parser.add_argument("--model", default="LLMTRSR")
    parser.add_argument("--dataset", default="ml-100k", help="only for the dataset's YAML, if any; no data is read")
    parser.add_argument("--config_files", default="")
    args, overrides = parser.parse_known_args(argv)
    config = TRSRConfig(args.model, args.dataset, config_file_list=args.config_files.split() or None,
                        config_dict={"llm_path": args.llm_path}, argv=overrides)
    keys = ("llm_dtype", "lora_layers", "lora_target_modules", "lora_r", "prompt_max_tokens", "neg_num",
            "item_max_tokens", "train_batch_size", "batch_max_tokens", "summary_batch_max_tokens")
    print(render(plan(args.llm_path, {k: config[k] for k in keys}), args.llm_path))


if __name__ == "__main__":
    main()
