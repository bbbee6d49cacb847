"""A key/value cache of one prefix, shared by a batch of continuations that keep nothing after their forward.

``kv`` scoring (:mod:`recbole_trsr.llm.scoring`) runs a user's prefix once and then batches of its
candidates' suffixes against it. transformers' ``DynamicCache`` stores what each layer's ``update``
returns (the prefix expanded to every row, then the rows' own keys), so by the last layer the forward
holds ``layers x rows x (prefix + width)`` positions at once: 28.8 GiB for Llama-3-8B scoring 100
candidates behind a 2,048-token prefix (traced, bf16). Scoring never reads that cache again, so
:class:`SharedPrefixLayer` returns the concatenation and keeps only the prefix: the full-width keys
live for one layer's attention at a time.
"""
import torch
from transformers import Cache, DynamicLayer


class SharedPrefixLayer(DynamicLayer):
    """One layer's prefix keys and values ([1, heads, prefix, head_dim]); ``update`` returns them expanded to
    the batch's rows and followed by the rows' own keys and values, and stores nothing."""

    def __init__(self, keys, values):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.keys, self.values = keys, values
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        rows = key_states.shape[0]
        return (torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2),
                torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2))

    def get_seq_length(self):
        return self.keys.shape[-2]


def shared_prefix_cache(layers):
    """A ``Cache`` over ``[(keys, values), ...]`` per layer (a one-row prefix's, from a forward with ``use_cache``)."""
    return Cache(layers=[SharedPrefixLayer(k, v) for k, v in layers])
