"""Today's fallback estimate of a run's activations, where a trace (:mod:`recbole_trsr.llm.memory_trace`)
cannot run: bytes autograd keeps per token per decoder layer, **measured** on one decoder layer of
the model's shape with its LoRA adapters (saved-tensor hooks), times the adapted layers, times the
tokens alive at once; with gradient checkpointing each layer keeps only its input. It counts no
backward temporaries: against traced peaks it is low (0.7x without checkpointing, about 0.26x with it
on Llama-3-8B, benchmarks/RESULTS.md), so :mod:`recbole_trsr.memory_plan` labels it an estimate."""
import json
import os
from pathlib import Path

import torch

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def model_config(llm_path, cache_dir="~/.cache/recbole_trsr"):
    """The architecture's ``PretrainedConfig`` from a folder, a ``config.json``, a cached hub id, or a
    GGUF (``python-package:...``, converted once as every run does)."""
    from transformers import AutoConfig

    from recbole_trsr.llm.backbone import resolve_model_folder

    llm_path = resolve_model_folder(str(llm_path), cache_dir)
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
