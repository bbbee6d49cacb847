"""Where the summarizer's time goes (issue #21): one decode step of a batch of 100 rows and one prefill
chunk of the loop decoder, split by component, beside what their matmuls would take at this machine's
matmul rate.

    python benchmarks/summarize_breakdown.py [--record]

The batch is 100 of ``benchmarks/summarize.py``'s ml-100k-plot block prompts, prefilled by the loop
decoder itself (shared prefix, chunks of rows, preallocated cache). The step is then re-run component
by component with the model's own modules (norms, projections, rotary, transformers' SDPA for the
prompt chunk, recbole_trsr's matmul attention for the decode step) on that cache. It is checked to
give the same next tokens as the model's forward on the same inputs, and both totals are shown, so the
split describes the computation the loop decoder does. Llama-architecture models (the default
SmolLM2) only.
"""
import argparse
import time
from collections import Counter

import torch
from transformers.cache_utils import Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from common import load_default_backbone, matmul_gflops, record, table
from summarize import NEW_TOKENS, prompts
from recbole_trsr.llm.attention import NAME, grouped_attention, use_attention
from recbole_trsr.llm.generation import LLMGenerator

ROWS, REPEATS = slice(100, 200), 5


class CapturingGenerator(LLMGenerator):
    """The loop decoder, keeping its prefill's inputs and the prefilled cache instead of decoding."""

    def _prefill(self, cache, shared_ids, ids, mask, positions):
        self.prefill_inputs = (shared_ids, ids, mask, positions)
        return super()._prefill(cache, shared_ids, ids, mask, positions)

    def _decode(self, cache, token, mask, position):
        self.decode_inputs = (cache, token, mask, position)
        return [[] for _ in token]


class Clock:
    """``clock(name)`` charges the time since its previous call to ``name``."""

    def __init__(self):
        self.spent, self.last = Counter(), time.perf_counter()

    def __call__(self, name):
        now = time.perf_counter()
        self.spent[name] += now - self.last
        self.last = now


def step(model, ids, positions, layers, allowed, attention, clock):
    """The model's forward over ``ids`` (a cache of ``layers``), component by component; the next tokens."""
    m = model.model
    h = m.embed_tokens(ids)
    cos, sin = m.rotary_emb(h, positions)
    clock("embedding, rotary tables")
    rows, width = ids.shape
    for layer, kv in zip(m.layers, layers):
        a, mlp = layer.self_attn, layer.mlp
        x = layer.input_layernorm(h)
        clock("RMSNorm")
        q, k, v = (p(x).view(rows, width, -1, a.head_dim).transpose(1, 2) for p in (a.q_proj, a.k_proj, a.v_proj))
        clock("q/k/v projections (matmul)")
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        clock("rotary")
        k, v = kv.update(k, v)
        clock("cache write")
        out, _ = attention(a, q, k, v, allowed, scaling=a.scaling)
        clock("attention")
        h = h + a.o_proj(out.reshape(rows, width, -1))
        clock("o projection + residual (matmul)")
        x = layer.post_attention_layernorm(h)
        clock("RMSNorm")
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        clock("gate/up projections (matmul)")
        x = mlp.act_fn(gate) * up
        clock("SiLU * up")
        h = h + mlp.down_proj(x)
        clock("down projection + residual (matmul)")
    logits = model.lm_head(m.norm(h[:, -1]))
    clock("final norm + lm_head (matmul)")
    token = logits.float().argmax(-1)
    clock("argmax")
    return token


def timed(run, reset):
    """Mean seconds of ``run()`` over REPEATS, ``reset()`` before each; its last result."""
    seconds = 0.0
    for _ in range(REPEATS):
        reset()
        start = time.perf_counter()
        result = run()
        seconds += time.perf_counter() - start
    return seconds / REPEATS, result


def measure(model, tokenizer):
    gen = CapturingGenerator(model, tokenizer, max_new_tokens=NEW_TOKENS)
    gen(sorted(prompts(tokenizer), key=len)[ROWS])
    shared_ids, ids, mask, positions = gen.prefill_inputs
    cache, token, _, position = gen.decode_inputs
    shared, written = len(shared_ids), cache.layers[0].length
    linear = sum(p.weight.numel() for layer in model.model.layers
                 for p in (*(getattr(layer.self_attn, f"{n}_proj") for n in "qkvo"),
                           layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj))
    head = model.lm_head.weight.numel()
    rate = matmul_gflops(next(model.parameters()).dtype) * 1e9
    cases = {}

    # decode: every row's next token on the prefilled cache
    n = len(token)
    step_ids, step_pos = token[:, None], (position + 1)[:, None]
    step_mask = torch.cat([gen.decode_inputs[2], gen.decode_inputs[2].new_ones(n, 1)], dim=1)
    # A decode step reads the whole preallocated buffers (LLMGenerator's decode_reads_capacity): positions
    # not written yet are masked, as transformers' mask does for the model's forward.
    read = cache.layers[0].capacity if cache.layers[0].decode_reads_capacity else written + 1
    allowed = torch.nn.functional.pad(step_mask.bool(), (0, read - step_mask.shape[1]))[:, None, None, :]

    def reset_decode():
        for layer in cache.layers:
            layer.set_length(written)

    def model_decode():
        with use_attention(model, NAME):
            out = model(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos, past_key_values=cache,
                        use_cache=True)
        return out.logits[:, -1].float().argmax(-1)

    cases["decode step"] = (f"{n} rows, 1 token each, {written + 1} cache positions of {read} read",
                            n * (linear + head),
                            lambda clock: step(model, step_ids, step_pos, cache.layers, allowed, grouped_attention,
                                               clock), reset_decode, model_decode)

    # prefill: the first chunk of rows, after the shared prefix
    rows = max(1, gen.prefill_max_tokens // ids.shape[1])
    part = Cache(layers=[layer.row_slice(0, rows) for layer in cache.layers])
    chunk_ids, chunk_mask, chunk_pos = ids[:rows], mask[:rows], positions[:rows]
    causal = torch.ones(ids.shape[1], mask.shape[1], dtype=torch.bool).tril(shared)
    chunk_allowed = chunk_mask.bool()[:, None, None, :] & causal

    def reset_prefill():
        for layer in part.layers:
            layer.set_length(shared)

    def model_prefill():
        out = model(input_ids=chunk_ids, attention_mask=chunk_mask, position_ids=chunk_pos, past_key_values=part,
                    use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float().argmax(-1)

    cases["prefill chunk"] = (f"{rows} rows of {ids.shape[1]} tokens after a shared prefix of {shared}",
                              rows * (ids.shape[1] * linear + head),
                              lambda clock: step(model, chunk_ids, chunk_pos, part.layers, chunk_allowed,
                                                 sdpa_attention_forward, clock), reset_prefill, model_prefill)

    results = {}
    with torch.no_grad():
        for name, (what, matmul_params, by_component, reset, forward) in cases.items():
            reset()
            forward()  # warm-up
            forward_s, expected = timed(forward, reset)
            clock = Clock()

            def reset_both():
                reset()
                clock.last = time.perf_counter()  # the reset itself is charged to no component

            split_s, got = timed(lambda: by_component(clock), reset_both)
            spent = {k: v / REPEATS for k, v in clock.spent.items()}
            results[name] = dict(what=what, forward_s=forward_s, split_s=split_s, spent=spent,
                                 same=bool(torch.equal(expected, got)), ideal_s=2 * matmul_params / rate)
    return results, rate


def report(results, rate, dtype):
    names = list(results)
    components = sorted({c for r in results.values() for c in r["spent"]},
                        key=lambda c: -results[names[0]]["spent"].get(c, 0.0))

    def cell(name, component):
        spent = results[name]["spent"]
        ms = spent.get(component, 0.0)
        return f"{1e3 * ms:.1f} ({100 * ms / sum(spent.values()):.0f}%)"

    lines = [[c] + [cell(n, c) for n in names] for c in components]
    lines.append(["total, component by component"] + [f"{1e3 * results[n]['split_s']:.1f}" for n in names])
    lines.append(["total, the model's forward"] + [f"{1e3 * results[n]['forward_s']:.1f}" for n in names])
    lines.append(["same next tokens as the forward"] + ["yes" if results[n]["same"] else "NO" for n in names])
    lines.append([f"matmuls alone at the {dtype} matmul rate ({rate / 1e9:.0f} GFLOP/s)"]
                 + [f"{1e3 * r['ideal_s']:.1f} ({100 * r['ideal_s'] / r['forward_s']:.0f}% of the forward)"
                    for r in (results[n] for n in names)])
    text = table(["component", *(f"{n}: ms ({results[n]['what']})" for n in names)], lines)
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    backbone = load_default_backbone()
    if backbone.model.config.model_type != "llama":
        raise SystemExit(f"the breakdown re-runs Llama layers; this model is {backbone.model.config.model_type!r}")
    results, rate = measure(backbone.model, backbone.tokenizer)
    dtype = str(next(backbone.model.parameters()).dtype).replace("torch.", "")
    text = report(results, rate, dtype)
    if args.record:
        record("Summarizer: where a decode step and a prefill chunk spend their time",
               "python benchmarks/summarize_breakdown.py --record", text)
