"""Memory levers on a Llama-shaped model: peak memory and step time of one LoRA SFT step per lever.

    python benchmarks/train_memory.py                       # 24 layers, hidden 2048 (1.2B), random init
    python benchmarks/train_memory.py --layers=4 --hidden=512 --rows=4   # a quick look

Each lever runs in a fresh process (its peak RSS is its own) on the same random-init model (written
once, bf16 safetensors, to ``--folder``), computing in fp32 (bf16 is emulated on CPUs without it,
and no lever depends on the dtype), one step over the same rows. Rows, each against "today"
(every micro-batch's graph alive until one backward, as before ``backward_per_micro_batch``):

* ``micro``: ``backward_per_micro_batch`` (the default now);
* ``ckpt``: ``gradient_checkpointing`` on top of ``micro``;
* ``4bit``: ``llm_quantization: 4bit`` (bitsandbytes NF4) on top of ``ckpt``.

"above weights" is the peak RSS less the RSS once the model is loaded and adapted: the
activations, gradients and optimizer state a step adds. ``recbole_trsr.memory_plan`` predicts it
(``--plan`` prints its estimate beside the measured peaks).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from common import ROOT, record, table

LEVERS = {"today": dict(micro=False, ckpt=False, quant=None), "micro": dict(micro=True, ckpt=False, quant=None),
          "ckpt": dict(micro=True, ckpt=True, quant=None), "4bit": dict(micro=True, ckpt=True, quant="4bit")}


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def write_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    folder = Path(args.folder)
    if (folder / "config.json").is_file():
        return folder
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 128,
                         num_key_value_heads=max(1, args.hidden // 512), max_position_embeddings=4096)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    vocab = {f"t{i}": i for i in range(args.vocab)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                        pad_token="t0", eos_token="t1", bos_token="t2")
    tokenizer.save_pretrained(folder)
    return folder


def rows(args):
    from recbole_trsr.llm.scoring import Group

    g = torch.Generator().manual_seed(0)
    return [Group(torch.randint(10, args.vocab, (int(n),), generator=g).tolist(),
                  [torch.randint(10, args.vocab, (args.item_tokens,), generator=g).tolist() for _ in range(1 + args.neg)])
            for n in torch.randint(args.prefix // 2, args.prefix + 1, (args.rows,), generator=g)]


def measure(args):
    from peft import LoraConfig, get_peft_model

    from recbole_trsr.llm.backbone import load_backbone
    from recbole_trsr.llm.memory import peak_memory, prepare_for_training, reset_peak_memory
    from recbole_trsr.llm.scoring import AnswerScorer

    lever = LEVERS[args.variant]
    backbone = load_backbone(str(args.folder), dtype="float32", quantization=lever["quant"])
    model = get_peft_model(prepare_for_training(backbone.model, lever["ckpt"]),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = rows(args)
    scorer = AnswerScorer(model, 5, 6, 0, mode="packed", pack_max_tokens=args.pack_max_tokens,
                          batch_max_tokens=args.batch_max_tokens)
    labels = torch.tensor([5] + [6] * args.neg).repeat(len(data))
    loaded = rss_mb()
    reset_peak_memory("cpu")  # the step's peak, not the load's
    start = time.perf_counter()
    loss = scorer.answer_loss(data, labels, backward_scale=1.0 if lever["micro"] else None)
    if not lever["micro"]:
        loss.backward()
    opt.step()
    seconds = time.perf_counter() - start
    return {"variant": args.variant, "seconds": seconds, "loaded_mb": loaded, "peak_mb": peak_memory("cpu")[0] / 2 ** 20,
            "tokens": scorer.tokens_seen}


def report(args):
    import subprocess

    write_model(args)
    passed = [a for a in sys.argv[1:] if not a.startswith("--variant")]
    results = {}
    for name in LEVERS:
        out = subprocess.run([sys.executable, __file__, f"--variant={name}", *passed], capture_output=True, text=True,
                             cwd=ROOT)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["today"]
    above = {k: r["peak_mb"] - r["loaded_mb"] for k, r in results.items()}
    lines = []
    for name, r in results.items():
        lines.append([name, f"{r['loaded_mb']:.0f}", f"{above[name]:.0f}", f"{above[name] / above['today']:.2f}x",
                      f"{r['peak_mb']:.0f}", f"{r['peak_mb'] / base['peak_mb']:.2f}x", f"{r['seconds']:.1f}",
                      f"{r['seconds'] / base['seconds']:.2f}x"])
    text = table(["lever", "RSS loaded (MB)", "above weights (MB)", "vs today", "peak RSS (MB)", "vs today",
                  "step (s)", "vs today"], lines)
    text += (f"\n\nModel: random-init Llama, {args.layers} layers, hidden {args.hidden}, intermediate "
             f"{args.intermediate}, vocab {args.vocab}, fp32; LoRA r=8 on q, k, v, o; one step over {args.rows} "
             f"prompts of {args.prefix // 2}-{args.prefix} tokens + {1 + args.neg} candidates of {args.item_tokens} "
             f"({base['tokens']} tokens), packed, batch_max_tokens={args.batch_max_tokens}. Levers are cumulative "
             "(micro, then + checkpointing, then + 4-bit); 'today' is the graph kept for one backward.\n\n"
             f"peak memory above the weights: micro {above['micro'] / above['today']:.2f}x, "
             f"+ckpt {above['ckpt'] / above['today']:.2f}x, +4bit {above['4bit'] / above['today']:.2f}x of today's")
    if args.plan:
        from recbole_trsr.llm.memory_estimate import plan_training

        plan = plan_training(args.folder, dict(batch_tokens=base["tokens"], micro_batch_tokens=args.batch_max_tokens,
                                               dtype="float32", lora_r=8, lora_targets=["q_proj", "k_proj", "v_proj", "o_proj"]))
        text += "\n\nmemory_plan's estimate of the same runs (activations + LoRA state, MB) beside the measured 'above weights':\n\n"
        text += table(["lever", "planned (MB)", "measured (MB)", "planned / measured"],
                      [[k, f"{plan[k] / 2 ** 20:.0f}", f"{above[k]:.0f}", f"{plan[k] / 2 ** 20 / above[k]:.2f}"]
                       for k in ("today", "micro", "ckpt")])
    print(text)
    if args.record:
        record("Training memory levers on a Llama-shaped model", "python benchmarks/train_memory.py " +
               " ".join(a for a in passed if a != "--record"), text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant")
    parser.add_argument("--folder", default="/tmp/trsr-llama-shaped")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rows", type=int, default=4, help="prompts (users) in the step")
    parser.add_argument("--prefix", type=int, default=320, help="longest prompt prefix (tokens)")
    parser.add_argument("--item_tokens", type=int, default=24)
    parser.add_argument("--neg", type=int, default=4)
    parser.add_argument("--pack_max_tokens", type=int, default=2048)
    parser.add_argument("--batch_max_tokens", type=int, default=512)
    parser.add_argument("--plan", action="store_true", help="print memory_plan's estimate beside the peaks")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    args.folder = Path(args.folder)
    if args.variant:
        print(json.dumps(measure(args)))
    else:
        report(args)


if __name__ == "__main__":
    main()
