"""Greedy batched text generation with a causal LM (the summarizer's LLM calls).

Two decoders write the same greedy text (``tests/test_generation.py``):

* ``loop`` (default): this module's own greedy loop, built for many short generations on a CPU.
  Prompts are sorted by length and cut into token-budgeted batches (``batch_max_tokens`` counts
  prompt + new tokens of every row, padding included); the prompts' common token prefix (chat
  header and the template's first line) is computed once and shared by every row of a batch; the
  key/value cache is preallocated, so a decode step writes its token in place instead of copying
  the whole cache, and reads the whole buffers (positions not written yet masked), which the
  attention's matmuls take in place where a view of the written positions is copied first; finished
  rows leave the batch; attention runs as two matmuls per layer (:mod:`recbole_trsr.llm.attention`)
  on a CPU, and as the model's own on CUDA.
* ``hf``: transformers' ``generate`` (the reference, and the way out for a model the loop does
  not fit, e.g. one whose cache is not a list of key/value layers).

Each lever has its own switch so that ``benchmarks/summarize.py`` can measure it alone.
"""
import inspect
import logging
import time

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from recbole_trsr.llm.attention import NAME as GROUPED_ATTENTION, use_attention
from recbole_trsr.prompt import FramedPrompts

logger = logging.getLogger(__name__)

DECODERS = ("loop", "hf")


class PreallocatedLayer(DynamicLayer):
    """One layer's key/value cache in buffers sized for a whole batch's prompt + new tokens: ``update``
    writes the new positions in place and returns views, where transformers' ``DynamicLayer``
    concatenates (copies the whole cache) at every decode step. Keys are stored transposed
    ([rows, heads, head_dim, positions]), so that ``keys^T``, which attention multiplies by, has unit
    stride along positions. With ``decode_reads_capacity`` a decode step gets the whole buffers: they
    are contiguous, and the matmuls read them in place, where a view of the written positions (rows
    ``capacity`` apart) took twice as long (100 rows, 184 of 232 positions, bf16).
    :meth:`row_slice` gives a layer over some rows of the same buffers, so a batch can be prefilled in
    chunks of rows, and a prefix shared by the batch computed in row 0 alone (:meth:`copy_first_row`)."""

    def __init__(self, capacity, rows, kv_heads, head_dim, dtype, device, decode_reads_capacity=False,
                 transposed_keys=True):
        super().__init__()
        self.dtype, self.device, self.capacity, self.length = dtype, device, int(capacity), 0
        self.decode_reads_capacity = decode_reads_capacity
        # transposed_keys: the CPU layout above, for the matmul attention. False (CUDA): keys stored as
        # [rows, heads, positions, head_dim], unit stride along head_dim, which the fused SDPA kernels need
        # (with the transposed layout they fall back to the math kernel).
        self.transposed_keys = transposed_keys
        # Zeros, not empty: a decode step that reads the whole capacity multiplies the unwritten
        # positions by a probability of exactly 0, which must not meet a NaN left in fresh memory.
        alloc = torch.zeros if decode_reads_capacity else torch.empty
        shape = (rows, kv_heads, head_dim, self.capacity) if transposed_keys else (rows, kv_heads, self.capacity, head_dim)
        self._keys_t = alloc(*shape, dtype=dtype, device=device)
        self._values = alloc(rows, kv_heads, self.capacity, head_dim, dtype=dtype, device=device)
        self.is_initialized = True
        self._views()

    def _key_positions(self):
        """The key buffer as [rows, heads, positions, head_dim], whatever its layout."""
        return self._keys_t.transpose(-1, -2) if self.transposed_keys else self._keys_t

    def _views(self):
        self.keys = self._key_positions()[:, :, :self.length]
        self.values = self._values[:, :, :self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"preallocated KV cache of {self.capacity} positions is full (asked for {end})")
        self._key_positions()[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self._views()
        if self.decode_reads_capacity and key_states.shape[-2] == 1:
            # The whole buffers: contiguous operands that the matmuls read in place, where a view of the
            # first ``length`` positions (rows ``capacity`` apart) is copied first, which took half of a
            # decode step's attention. The mask (:meth:`get_mask_sizes`) hides what is not written yet.
            return self._key_positions(), self._values
        return self.keys, self.values

    def get_mask_sizes(self, query):
        # transformers 5.23 passes the query's length; a tensor of the query's cache positions is read too
        query_length = query if isinstance(query, int) else query.shape[-1]
        if self.decode_reads_capacity and query_length == 1:
            return self.capacity, 0
        return super().get_mask_sizes(query)

    def get_seq_length(self):
        return self.length

    def row_slice(self, start, stop):
        """A layer that reads and writes rows ``[start, stop)`` of this layer's buffers."""
        part = object.__new__(PreallocatedLayer)
        part.__dict__.update(self.__dict__)
        part._keys_t, part._values = self._keys_t[start:stop], self._values[start:stop]
        part._views()
        return part

    def copy_first_row(self, length):
        """Row 0's first ``length`` positions (a shared prefix) into every row; the cache then holds ``length``."""
        keys = self._key_positions()
        keys[1:, :, :length] = keys[:1, :, :length]
        self._values[1:, :, :length] = self._values[:1, :, :length]
        self.set_length(length)

    def set_length(self, length):
        self.length = int(length)
        self._views()

    def batch_select_indices(self, indices):
        self._keys_t = self._keys_t.index_select(0, indices)
        self._values = self._values.index_select(0, indices)
        self._views()


def preallocated_cache(model, rows, capacity, dtype, device, decode_reads_capacity=False, transposed_keys=True):
    """A transformers ``Cache`` of :class:`PreallocatedLayer` for ``rows`` sequences of ``capacity`` positions."""
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return Cache(layers=[PreallocatedLayer(capacity, rows, kv_heads, head_dim, dtype, device, decode_reads_capacity,
                                           transposed_keys) for _ in range(config.num_hidden_layers)])


def left_padded(rows, pad):
    """(ids, attention mask) of token rows padded on the left to the longest."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        if r:
            ids[b, width - len(r):] = torch.tensor(r)
            mask[b, width - len(r):] = 1
    return ids, mask


def common_prefix_length(rows):
    """Length of the longest token prefix shared by every row."""
    first, n = rows[0], min(map(len, rows))
    for i in range(n):
        token = first[i]
        if any(r[i] != token for r in rows):
            return i
    return n


class LLMGenerator:
    """Greedy batched generation: a list of prompt strings -> a list of completions.

    Each prompt is wrapped in the model's chat frame with exactly one BOS; prompts over
    ``max_prompt_tokens`` keep the frame and their last tokens (the instruction) and are counted in
    :attr:`n_truncated`. ``decoder``: ``loop`` or
    ``hf`` (module docstring). The other arguments are the ``loop`` decoder's levers: ``batch_max_tokens``
    (prompt + new tokens of a batch, padding included), ``share_prefix``, ``drop_finished``,
    ``preallocate`` (the KV cache), ``prefill_max_tokens`` (a batch's prompts are prefilled in chunks of
    rows of at most this many tokens, which keeps activations in the CPU's caches: 15% faster prefill
    at 16 rows of 150 tokens than at 96; needs ``preallocate``; 0: one forward), ``attention``
    (``"auto"``: matmul decode attention on a CPU, the model's own on CUDA; ``None``: the model's own;
    or a registered name) and ``decode_reads_capacity`` (decode steps attend over the whole preallocated
    buffers, unwritten positions masked, so that attention reads contiguous memory in place; needs
    ``preallocate``).
    """

    def __init__(self, model, tokenizer, max_new_tokens=64, use_chat_template=True, max_prompt_tokens=1024,
                 decoder="loop", batch_max_tokens=24576, share_prefix=True, drop_finished=True, preallocate=True,
                 prefill_max_tokens=2048, attention="auto", decode_reads_capacity=True, key_layout="auto",
                 sync_every="auto"):
        if decoder not in DECODERS:
            raise ValueError(f"summary decoder must be one of {DECODERS}, not {decoder!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.decoder = decoder
        self.batch_max_tokens = int(batch_max_tokens)
        self.share_prefix = share_prefix
        self.drop_finished = drop_finished
        self.preallocate = preallocate
        self.prefill_max_tokens = int(prefill_max_tokens)
        self.attention = attention
        self.decode_reads_capacity = decode_reads_capacity
        # key_layout: "transposed" (the CPU matmul attention's) | "positions" (the fused SDPA kernels') | auto
        # (by device); sync_every: decode steps between the host's checks for finished rows (auto: 1 on
        # a CPU, where a check costs nothing, 8 on CUDA, where each one stalls the queue of kernels).
        if key_layout not in ("auto", "transposed", "positions"):
            raise ValueError(f"key_layout must be auto, transposed or positions, not {key_layout!r}")
        self.key_layout, self.sync_every = key_layout, sync_every
        self.frames = FramedPrompts(tokenizer, use_chat_template, max_prompt_tokens)
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = tokenizer.eos_token_id if eos is None else eos
        self.eos_ids = sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None})
        self.n_calls = 0
        self.tokens_in = 0  # prompt tokens (without padding) and generated tokens, for throughput reports
        self.tokens_out = 0
        self.seconds = {"prefill": 0.0, "decode": 0.0}  # the loop decoder's time in each phase

    def __call__(self, prompts):
        if not prompts:
            return []
        rows = self.frames(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            if self.decoder == "hf":
                new = self._generate_hf(rows)
            else:
                new = [None] * len(rows)
                for batch in self._batches(rows):
                    for i, out in zip(batch, self._generate_loop([rows[i] for i in batch])):
                        new[i] = out
        finally:
            self.model.train(was_training)
        self.n_calls += len(prompts)
        self.tokens_in += sum(map(len, rows))
        self.tokens_out += sum(map(len, new))
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]

    @property
    def n_truncated(self):
        """Prompts cut to ``max_prompt_tokens`` (see :class:`~recbole_trsr.prompt.FramedPrompts`)."""
        return self.frames.n_truncated

    def _batches(self, rows):
        """Row indices in batches of similar lengths, each within ``batch_max_tokens`` (padding included)."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        batches, current = [], []
        for i in order:  # ascending: the row being added is the batch's longest
            if current and (len(current) + 1) * (len(rows[i]) + self.max_new_tokens) > self.batch_max_tokens:
                batches.append(current)
                current = []
            current.append(i)
        return batches + [current] if current else batches

    def _device(self):
        return next(self.model.parameters()).device

    def _transposed_keys(self):
        if self.key_layout == "auto":
            return self._device().type != "cuda"
        return self.key_layout == "transposed"

    def _sync_every(self):
        if self.sync_every == "auto":
            return 8 if self._device().type == "cuda" else 1
        return max(1, int(self.sync_every))

    def _attention(self):
        if self.attention != "auto":
            return self.attention
        return None if self._device().type == "cuda" else GROUPED_ATTENTION

    def _generate_loop(self, rows):
        """Greedy continuations (token ids, up to and including an end token) of one batch of rows."""
        produced, lengths = self.generate_batch(rows)
        return [produced[b, :lengths[b]].tolist() for b in range(len(rows))]

    @torch.no_grad()
    def generate_batch(self, rows, decode_steps=None):
        """One batch of token-id rows on the loop decoder: ``(produced, lengths)``, the new tokens of each
        row (padded to ``max_new_tokens``) and how many are its own. ``decode_steps`` stops after that many
        new tokens, with every buffer still sized for ``max_new_tokens`` (the memory trace's two steps)."""
        model, device, n = self.model, self._device(), len(rows)
        shared = common_prefix_length(rows) if self.share_prefix and n > 1 else 0
        shared = min(shared, min(map(len, rows)) - 1)  # every row keeps at least one token of its own
        ids, mask = left_padded([r[shared:] for r in rows], self.tokenizer.pad_token_id)
        mask = torch.cat([mask.new_ones(n, shared), mask], dim=1)
        # transformers' own rule for left padding: positions count real tokens; padding gets 1.
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, shared:]
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        started = time.perf_counter()
        with use_attention(model, self._attention()):
            if self.preallocate:
                capacity = mask.shape[1] + self.max_new_tokens
                cache = preallocated_cache(model, n, capacity, next(model.parameters()).dtype, device,
                                           self.decode_reads_capacity, self._transposed_keys())
            else:
                cache = DynamicCache()
            token = self._prefill(cache, rows[0][:shared], ids, mask, positions)
            prefilled = time.perf_counter()
            produced, lengths = self._decode(cache, token, mask, positions[:, -1], decode_steps)
        self.seconds["prefill"] += prefilled - started
        self.seconds["decode"] += time.perf_counter() - prefilled
        return produced, lengths

    def _prefill(self, cache, shared_ids, ids, mask, positions):
        """Fill ``cache`` with the shared prefix (computed once) and every row's own tokens (in chunks of rows);
        return each row's first new token."""
        model, device, n = self.model, ids.device, len(ids)
        keep_last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        if shared_ids:  # computed for one row, then copied to every row
            first = Cache(layers=[layer.row_slice(0, 1) for layer in cache.layers]) if self.preallocate else cache
            model(input_ids=torch.tensor([shared_ids], device=device), past_key_values=first, use_cache=True,
                  **keep_last)
            if self.preallocate:
                for layer in cache.layers:
                    layer.copy_first_row(len(shared_ids))
            else:
                cache.batch_repeat_interleave(n)
        width = ids.shape[1]
        step = max(1, self.prefill_max_tokens // width) if self.preallocate and self.prefill_max_tokens else n
        logits = []
        for a in range(0, n, step):
            part = Cache(layers=[layer.row_slice(a, a + step) for layer in cache.layers]) if step < n else cache
            out = model(input_ids=ids[a:a + step], attention_mask=mask[a:a + step], position_ids=positions[a:a + step],
                        past_key_values=part, use_cache=True, **keep_last)
            logits.append(out.logits[:, -1])
        if step < n:
            for layer in cache.layers:
                layer.set_length(mask.shape[1])
        return torch.cat(logits).float().argmax(-1)  # fp32: a faster reduction than bf16, the same answer

    def _decode(self, cache, token, mask, position, steps=None):
        """Greedy steps from the first new token of each row until every row has ended or the budget is spent
        (``steps`` new tokens, at most ``max_new_tokens``): ``(produced, lengths)``."""
        n, device, pad = len(token), token.device, self.tokenizer.pad_token_id
        steps = self.max_new_tokens if steps is None else min(int(steps), self.max_new_tokens)
        eos = torch.tensor(self.eos_ids, device=device)
        where = torch.arange(n, device=device)  # which row each cache row holds
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        produced = torch.full((n, self.max_new_tokens), pad, dtype=torch.long, device=device)
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        every = self._sync_every()
        for step in range(steps):
            live = ~finished  # no boolean indexing below: its data-dependent size would sync with the host
            produced[where, step] = torch.where(live, token, produced[where, step])
            lengths[where] = torch.where(live, step + 1, lengths[where])
            finished |= torch.isin(token, eos)
            if step == steps - 1:
                break
            if (step + 1) % every:  # rows that finished meanwhile run on, their tokens not recorded
                done = None
            else:
                done = int(finished.sum())  # the step's one host sync
                if done == len(finished):
                    break
            if self.drop_finished and done is not None and done * 4 >= len(finished):
                # Rows that are done leave the batch once they are a quarter of it: dropping copies the
                # cache, so it is not done for every single row that finishes.
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                where, token, position = where[keep], token[keep], position[keep]
                mask, finished = mask[keep], finished[keep]
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            position = position + 1
            out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                             past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].float().argmax(-1)
        return produced, lengths

    @torch.no_grad()
    def _generate_hf(self, rows):
        """transformers' ``generate`` over all rows as one left-padded batch (the reference)."""
        tok = self.tokenizer
        ids, mask = left_padded(rows, tok.pad_token_id)
        width = ids.shape[1]
        device = self._device()
        out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id, use_cache=True)
        new = out[:, width:].tolist()
        return [row[:next((k + 1 for k, t in enumerate(row) if t in self.eos_ids), len(row))] for row in new]
