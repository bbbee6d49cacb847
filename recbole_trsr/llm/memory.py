"""Memory levers for large recommenders: k-bit weights (QLoRA) and gradient checkpointing.

``llm_quantization: 4bit | 8bit`` loads the backbone's linear layers through bitsandbytes (4-bit:
NF4 with double quantization, computing in the model's dtype, as QLoRA and LlamaRec; 8-bit: LLM.int8,
as TALLRec and the official LLM-TRSR code) and prepares it with peft's ``prepare_model_for_kbit_training``
before LoRA is attached. ``gradient_checkpointing: true`` keeps only each decoder layer's input during
the forward pass and recomputes the rest in the backward (non-reentrant, so LoRA's gradients reach
the layers with frozen inputs; peft's input-grad hook is set as well). The third lever, the backward
run per micro-batch, is the scorer's (:meth:`recbole_trsr.llm.scoring.AnswerScorer.answer_loss`).
"""
import torch

QUANTIZATIONS = ("4bit", "8bit")


def quantization_config(name, compute_dtype):
    """transformers' ``BitsAndBytesConfig`` for ``llm_quantization`` (None for ``~`` / ``none``)."""
    if name in (None, "none", False):
        return None
    if name not in QUANTIZATIONS:
        raise ValueError(f"llm_quantization must be one of {QUANTIZATIONS} or ~, not {name!r}")
    try:
        import bitsandbytes  # noqa: F401  (transformers would only say so at load time)
    except ImportError as exc:
        raise ImportError(f"llm_quantization={name} needs bitsandbytes: pip install -e '.[quant]'") from exc
    from transformers import BitsAndBytesConfig

    if name == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def is_quantized(model):
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_training(model, gradient_checkpointing):
    """The backbone, ready for adapters: k-bit preparation if it was loaded quantized, and
    gradient checkpointing if asked for. Call it before ``get_peft_model``."""
    kwargs = {"use_reentrant": False}
    if is_quantized(model):
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(gradient_checkpointing),
                                               gradient_checkpointing_kwargs=kwargs)
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x: the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.enable_input_require_grads()
    return model


def checkpointing_enabled(model):
    """Whether any module of ``model`` (a peft model too) recomputes its activations in the backward."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def reset_peak_memory(device):
    """Start a new peak: CUDA's peak statistics, or on Linux the process's peak RSS (``clear_refs``)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: the peak stays the process's since it started
        pass


def peak_memory(device):
    """``(bytes, what)``: CUDA's max allocated on a GPU, else the process's peak RSS, each since the
    last :func:`reset_peak_memory`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "max allocated"
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")), "peak RSS"
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"
