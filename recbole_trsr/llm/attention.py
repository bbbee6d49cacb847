"""Attention implementations registered with transformers: decode steps on CPUs, and grouped-query
attention for candidate batches under a mask.

On a CPU, torch's SDPA kernel (``_scaled_dot_product_flash_attention_for_cpu``) is slow for one
query token against a long padded cache, and transformers first copies every key/value head
``n_rep`` times (``repeat_kv``) when a mask is given: measured on SmolLM2-135M in bf16 on 2 cores,
attention took 47% of a decode step at batch 64. For a one-token query the query heads that share a
key/value head are stacked into one matrix, so each key/value head is read once and the work is two
small matmuls (``softmax`` in fp32, as transformers' eager attention). Prompts (more than one query
token) go to transformers' SDPA unchanged: there the scores matrix would be large, and SDPA's
kernel never builds it.

:func:`grouped_attention` registers itself with transformers' ``AttentionInterface`` under
:data:`NAME`; :func:`use_attention` switches a model to it for a block and back.

:func:`grouped_query_sdpa` (:data:`GROUPED_QUERIES`) is SDPA with the query heads that share a key/value
head stacked along the query axis, for any query length. transformers' SDPA path copies every key/value
head ``n_rep`` times (``repeat_kv``) whenever a mask is given (CUDA's and the CPU's kernels take
grouped heads only without one); ``kv`` scoring always has a mask, and its keys are a whole prefix per
candidate row, so the copies were 4x the keys on Llama-3-8B (``n_rep`` 4): 3.2 of the 4.3 GiB an
evaluation step held behind a 2,048-token prefix (traced).
"""
import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "trsr_grouped"


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention signature: ``query`` [B, H, q, D], ``key``/``value`` [B, KVH, kv, D],
    ``attention_mask`` boolean [B, 1, q, kv] (True: attend) or None (causal). Returns ([B, q, H, D], None)."""
    if query.shape[2] > 1:
        return sdpa_attention_forward(module, query, key.to(query.dtype), value.to(query.dtype), attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    out_dtype = query.dtype
    query = query.to(key.dtype)  # a cache kept in fp32 (see generation.py) computes in fp32
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scaling = dim ** -0.5 if scaling is None else scaling
    # Query head h uses key/value head h // group (transformers' repeat_kv order).
    q = query.reshape(batch, kv_heads, group * q_len, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).view(batch, kv_heads, group, q_len, kv_len).float()
    scores.mul_(scaling)
    if attention_mask is None:
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    elif attention_mask.dtype != torch.bool:  # an additive float mask
        scores.add_(attention_mask.unsqueeze(1))
        attention_mask = None
    if attention_mask is not None:
        allowed = attention_mask.unsqueeze(1) if attention_mask.dim() == 4 else attention_mask
        # The float minimum, not -inf: a left-padding query sees no key at all, and a row of -inf would
        # turn into NaN that the real rows then multiply (by zero) in ``probs @ value``.
        scores.masked_fill_(~allowed, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, group * q_len, kv_len)
    out = torch.matmul(probs, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).to(out_dtype).contiguous(), None


AttentionInterface.register(NAME, grouped_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # boolean masks, as SDPA gets them

GROUPED_QUERIES = "trsr_grouped_queries"


def grouped_query_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention signature (as :func:`grouped_attention`), for inference: SDPA over
    ``[B, KVH, group * q, D]`` queries, so the keys and values are read as they are, never repeated."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    if group == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # Query head h uses key/value head h // group (transformers' repeat_kv order); row g * q + i of a
    # stacked head is query i of head kv * group + g, so the mask repeats along the query axis.
    stacked = query.reshape(batch, kv_heads, group * q_len, dim)
    if attention_mask is None:
        positions = torch.arange(q_len, device=query.device)
        attention_mask = (positions[:, None] + key.shape[2] - q_len >= torch.arange(key.shape[2], device=query.device))
        attention_mask = attention_mask[None, None]
    mask = attention_mask.repeat(1, 1, group, 1) if attention_mask.shape[2] > 1 else attention_mask
    out = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=mask, dropout_p=0.0,
                                                           scale=scaling)
    return out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_QUERIES, grouped_query_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_QUERIES, sdpa_mask)


@contextlib.contextmanager
def use_attention(model, name=NAME):
    """Run ``model`` with attention implementation ``name`` inside the block (``None``: unchanged)."""
    before = getattr(model.config, "_attn_implementation", None)
    if name is None or name == before:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
