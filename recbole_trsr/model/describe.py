"""The plugin's LLM models print as one line, not as the LLM's module tree (RecBole logs ``str(model)``:
for a 30-layer model with LoRA that is over a hundred lines and says nothing about its size)."""
from pathlib import Path


def _adapter(llm):
    """``"LoRA r=8"`` / ``"AdaLoRA r=12->8"`` on which modules, and in how many layers."""
    config = llm.peft_config["default"]
    kind = type(config).__name__.replace("Config", "").replace("Lora", "LoRA")
    rank = f"r={config.init_r}->{config.target_r}" if hasattr(config, "target_r") else f"r={config.r}"
    targets = ",".join(sorted(config.target_modules)) if config.target_modules else "?"
    layers = {name.split(".layers.")[1].split(".")[0] for name, p in llm.named_parameters()
              if p.requires_grad and "lora_" in name and ".layers." in name}
    return f"{kind} {rank} on {targets} in {len(layers)} layers"


class OneLineDescription:
    """``str(model)``: model, backbone, dtype, parameters, trainable parameters, adapter, quantization.
    Needs ``self.llm`` (the peft model) and ``self.llm_name`` / ``self.llm_quantization``."""

    def __str__(self):
        base = self.llm.get_base_model()
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        dtype = str(next(base.parameters()).dtype).replace("torch.", "")
        name = Path(str(self.llm_name)).name or str(self.llm_name)
        return (f"{type(self).__name__}: backbone {name} ({type(base).__name__}, {base.config.num_hidden_layers} "
                f"layers), {dtype}, {total / 1e6:.1f}M parameters, {trainable:,} trainable "
                f"({100 * trainable / max(total, 1):.2f}%), {_adapter(self.llm)}, "
                f"quantization {self.llm_quantization or 'none'}")
