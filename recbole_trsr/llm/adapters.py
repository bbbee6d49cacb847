"""The adapters a run trains, from its config: LoRA (LLMTRSR) and AdaLoRA (DELRec).

One place builds them, so the model and the memory plan (:mod:`recbole_trsr.llm.memory_trace`)
attach the same adapters to the same layers."""
from peft import AdaLoraConfig, LoraConfig


# Parameter names a peft adapter adds: LoRA's and AdaLoRA's weights (``lora_A/B/E``) and AdaLoRA's rank count.
ADAPTER_MARKERS = ("lora_", "ranknum")


def is_adapter_parameter(name):
    """Whether ``name`` (a parameter of a peft model) belongs to an adapter (what checkpoints hold)."""
    return any(m in name for m in ADAPTER_MARKERS)


def trains(name):
    """Whether the adapter parameter ``name`` is trained. AdaLoRA's ``ranknum`` is the rank count its
    scaling divides by, not a weight; peft creates it frozen, but re-wraps it as a trainable parameter
    when it moves it to a base layer on another device (meta, cuda), so a run freezes it itself."""
    return is_adapter_parameter(name) and "ranknum" not in name


def freeze_rank_counts(model):
    """Make AdaLoRA's ``ranknum`` parameters of ``model`` frozen, wherever peft put them (see :func:`trains`)."""
    for name, p in model.named_parameters():
        if is_adapter_parameter(name) and not trains(name):
            p.requires_grad_(False)
    return model


def upper_layers(num_hidden_layers, n):
    """Indices of the top ``n`` decoder layers (``None``: every layer). LoRA only there means the
    backward pass stops at the lowest adapted layer: the layers below run forward only."""
    if not n:
        return None
    if not 0 < int(n) <= num_hidden_layers:
        raise ValueError(f"lora_layers={n}: the model has {num_hidden_layers} decoder layers")
    return list(range(num_hidden_layers - int(n), num_hidden_layers))


def lora_config(config, num_hidden_layers):
    """LLMTRSR's ``LoraConfig``: ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``
    in the top ``lora_layers`` layers."""
    return LoraConfig(r=config["lora_r"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
                      target_modules=list(config["lora_target_modules"]), task_type="CAUSAL_LM",
                      layers_to_transform=upper_layers(num_hidden_layers, config["lora_layers"]))


def adalora_config(config, total_step):
    """DELRec's ``AdaLoraConfig``: rank budget from ``adalora_init_r`` down to ``adalora_target_r``
    over ``total_step`` optimizer steps."""
    return AdaLoraConfig(init_r=config["adalora_init_r"], target_r=config["adalora_target_r"],
                         lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
                         target_modules=list(config["lora_target_modules"]), tinit=0, tfinal=0, deltaT=1,
                         total_step=max(2, total_step), task_type="CAUSAL_LM")
