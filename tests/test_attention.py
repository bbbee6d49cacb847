"""The attention implementations of recbole_trsr/llm/attention.py against transformers' SDPA path."""
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from recbole_trsr.llm.attention import grouped_attention, grouped_query_sdpa


class _Module(torch.nn.Module):
    is_causal = True

    def __init__(self, groups):
        super().__init__()
        self.num_key_value_groups = groups


@pytest.mark.parametrize("fn", [grouped_query_sdpa, grouped_attention], ids=["grouped-queries", "decode-matmuls"])
@pytest.mark.parametrize("q_len,kv_len,masked", [(5, 12, True), (7, 7, False), (1, 9, True)])
def test_grouped_heads_attend_as_repeated_heads(fn, q_len, kv_len, masked):
    """Query head h reads key/value head h // group, under a padding mask or none (causal, aligned to the end)."""
    g = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, dim = 3, 8, 2, 16
    query = torch.randn(batch, heads, q_len, dim, generator=g)
    key, value = (torch.randn(batch, kv_heads, kv_len, dim, generator=g) for _ in range(2))
    mask = None
    if masked:
        causal = torch.arange(q_len)[:, None] + kv_len - q_len >= torch.arange(kv_len)
        mask = (causal & (torch.rand(batch, 1, 1, kv_len, generator=g) > 0.3))
        mask[..., -1] = True  # every query sees at least itself
    module = _Module(heads // kv_heads)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim ** -0.5)
    got, _ = fn(module, query, key, value, mask, scaling=dim ** -0.5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
