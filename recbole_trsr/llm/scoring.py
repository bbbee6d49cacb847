"""Answer-position scoring of prompts made of a shared prefix and per-candidate suffixes.

``kv``: each user's prefix runs once and its key/value cache is shared by batches of that
user's candidate suffixes, which attend to it as if each prompt stood alone (inference only;
with gradients enabled it falls back to ``packed``).
``packed``: the prefix and all the candidates' suffixes are packed into one sequence; an
attention mask lets every suffix see the prefix and itself but no other suffix, and position
ids restart after the prefix for each suffix. Differentiable: training uses it.
``naive``: every candidate's full prompt is a row of its own (the baseline, and the reference
the equivalence tests compare against). ``benchmarks/scoring.py`` measures the three.

Only the decoder runs over the sequence; the answer positions' hidden states are projected
onto the two answer-token rows of the output embedding (or the full vocabulary for SFT).
Scores are computed in fp32 whatever the model's dtype: the last hidden state and the unembedding
rows are cast before the product, so a bf16 model's Yes/No logits are not rounded to 8 mantissa bits
(steps of 0.125 near a logit of 20), which made candidates tie. The cost is two rows for Yes/No;
for a suffix's log-likelihood the vocabulary is cast in chunks (:func:`token_log_probs`).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recbole_trsr.llm.attention import GROUPED_QUERIES, use_attention
from recbole_trsr.llm.prefix_cache import shared_prefix_cache

MODES = ("kv", "packed", "naive")


@dataclass
class Group:
    """One user's prompt: token ids of the prefix and of each candidate's suffix."""

    prefix: list
    suffixes: list


def base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model):
    base = base_model(model)
    return getattr(base, base.base_model_prefix)


def output_weight(model):
    return base_model(model).get_output_embeddings().weight


def token_log_probs(hidden, head, targets, chunk_rows=16384):
    """fp32 ``log P(targets[i])`` at each row of ``hidden`` ([n, hidden]) under the output layer
    ``head``. A low-precision head is cast ``chunk_rows`` vocabulary rows at a time, so no fp32 copy of
    the whole matrix is held (a Llama-3 vocabulary would take 2 GB).

    Computed as ``-softplus(logsumexp(other logits) - own logit)``, not ``own - logsumexp(all)``: the
    latter is exactly 0 in fp32 once the target leads every other token by ~17, so confident candidates
    would tie; the former keeps the (tiny) remainder to fp32's relative precision."""
    h, weight, bias = hidden.float(), head.weight, getattr(head, "bias", None)
    targets = torch.as_tensor(targets, device=h.device)
    rows = torch.arange(len(targets), device=h.device)
    others = None
    for start in range(0, weight.shape[0], chunk_rows):
        part = h @ weight[start:start + chunk_rows].float().t()
        if bias is not None:
            part = part + bias[start:start + chunk_rows].float()
        inside = (targets >= start) & (targets < start + part.shape[1])
        part[rows[inside], targets[inside] - start] = float("-inf")  # the target is not one of the others
        part = part.logsumexp(-1)
        others = part if others is None else torch.logaddexp(others, part)
    own = (h * weight[targets].float()).sum(-1) + (bias[targets].float() if bias is not None else 0)
    return -torch.nn.functional.softplus(others - own)


class AnswerScorer:
    """Hidden states (and Yes/No logits) at the answer position of prefix + suffix prompts."""

    def __init__(self, model, yes_id, no_id, pad_id, mode="kv", pack_max_tokens=2048, batch_max_tokens=4096,
                 fixed_length=None, soft_prompt=None):
        if mode not in MODES:
            raise ValueError(f"scoring_mode must be one of {MODES}, not {mode!r}")
        # fixed_length: the unbucketed baseline of benchmarks/train.py (rows in input order,
        # every row padded to fixed_length); None = length-sorted rows, padded per micro-batch.
        self.fixed_length = fixed_length
        # soft_prompt ([L, hidden]): replaces the embeddings of every prefix's first L tokens,
        # which the caller fills with placeholder ids (DELRec's distilled soft prompt).
        self.soft_prompt = soft_prompt
        self.model = model
        self.answer_ids = torch.tensor([yes_id, no_id])
        self.pad_id = pad_id
        self.mode = mode
        self.pack_max_tokens = pack_max_tokens
        self.batch_max_tokens = batch_max_tokens
        self.tokens_seen = 0  # tokens of the packed/naive rows run (training's), padding left out: tokens/s

    def yes_no_logits(self, groups):
        """[n_candidates, 2] fp32 logits of (Yes, No), candidates in group order."""
        hidden = self.answer_hidden(groups)
        weight = output_weight(self.model)[self.answer_ids.to(hidden.device)]
        return hidden.float() @ weight.float().t()

    def vocab_logits(self, groups):
        """[n_candidates, vocab] logits at the answer position (for SFT)."""
        hidden = self.answer_hidden(groups)
        return base_model(self.model).get_output_embeddings()(hidden)

    def answer_loss(self, groups, labels, backward_scale=None):
        """Mean cross-entropy (fp32) of the answer position's vocabulary logits against ``labels`` (one
        token id per candidate, candidates in group order), for SFT.

        ``backward_scale=None``: the loss with its whole graph, for the caller's backward; every
        micro-batch's activations stay alive until then. A number: each micro-batch's share of the mean
        is backpropagated (times ``backward_scale``) as soon as its forward ends, so one micro-batch's
        activations are alive at a time and ``batch_max_tokens`` caps them; the mean comes back detached.
        Both give the same gradients (``tests/test_memory.py``)."""
        if backward_scale is None:
            return F.cross_entropy(self.vocab_logits(groups).float(), labels)
        head = base_model(self.model).get_output_embeddings()
        total = torch.zeros((), device=labels.device)
        for batch in self._batches(self._rows(groups)):
            hidden = self._forward(batch)
            answers = [(b, cand, pos) for b, row in enumerate(batch) for cand, pos in row["answers"]]
            logits = head(torch.stack([hidden[b, pos] for b, _, pos in answers]))
            mine = labels[torch.tensor([cand for _, cand, _ in answers], device=labels.device)]
            share = F.cross_entropy(logits.float(), mine, reduction="sum") / len(labels)
            (share * backward_scale).backward()
            total += share.detach()
        return total

    def _rows(self, groups):
        return self._unpack(groups) if self.mode == "naive" else self._pack(groups)

    def _use_kv(self):
        return self.mode == "kv" and not torch.is_grad_enabled()

    def answer_hidden(self, groups):
        """[n_candidates, hidden] final hidden states at each candidate's answer position."""
        if self._use_kv():
            return torch.stack([h[-1] for h in self._kv_suffix_hidden(groups)])
        rows = self._rows(groups)
        out = [None] * sum(len(g.suffixes) for g in groups)
        for batch in self._batches(rows):
            hidden = self._forward(batch)
            for b, row in enumerate(batch):
                for cand, pos in row["answers"]:
                    out[cand] = hidden[b, pos]
        return torch.stack(out)

    def suffix_log_likelihood(self, groups):
        """[n_candidates] mean fp32 log-probability of each suffix's tokens given its prefix."""
        suffix_of = [s for g in groups for s in g.suffixes]
        head = base_model(self.model).get_output_embeddings()
        if self._use_kv():
            out = []
            for cand, hidden in enumerate(self._kv_suffix_hidden(groups, with_prefix_last=True)):
                out.append(token_log_probs(hidden[:-1], head, suffix_of[cand]).mean())
            return torch.stack(out)
        rows = self._rows(groups)
        out = [None] * len(suffix_of)
        for batch in self._batches(rows):
            hidden = self._forward(batch)
            for b, row in enumerate(batch):
                for cand, positions in row["spans"]:
                    out[cand] = token_log_probs(hidden[b, positions], head, suffix_of[cand]).mean()
        return torch.stack(out)

    def _embed(self, ids):
        embeds = decoder_of(self.model).get_input_embeddings()(ids)
        if self.soft_prompt is not None:
            n = self.soft_prompt.shape[0]
            soft = self.soft_prompt.to(embeds.dtype).expand(len(ids), -1, -1)
            embeds = torch.cat([soft, embeds[:, n:]], dim=1)
        return embeds

    def _kv_suffix_hidden(self, groups, with_prefix_last=False):
        """Per candidate, the hidden states of its suffix tokens (preceded by the prefix's last
        one when ``with_prefix_last``), computed against the prefix's shared key/value cache."""
        decoder = decoder_of(self.model)
        device = next(self.model.parameters()).device
        out = []
        for g in groups:
            p = len(g.prefix)
            first = decoder(inputs_embeds=self._embed(torch.tensor([g.prefix], device=device)), use_cache=True)
            kv = [(layer.keys, layer.values) for layer in first.past_key_values.layers]
            prefix_last = first.last_hidden_state[0, -1:]
            order = sorted(range(len(g.suffixes)), key=lambda k: -len(g.suffixes[k]))
            hidden_of = {}
            start = 0
            while start < len(order):
                width = len(g.suffixes[order[start]])
                rows = max(1, self.batch_max_tokens // max(1, width))
                chunk = order[start:start + rows]
                start += len(chunk)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), p + width), dtype=torch.long)
                mask[:, :p] = 1
                for r, k in enumerate(chunk):
                    n = len(g.suffixes[k])
                    ids[r, :n] = torch.tensor(g.suffixes[k])
                    mask[r, p:p + n] = 1
                with use_attention(base_model(self.model), GROUPED_QUERIES):
                    hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     past_key_values=shared_prefix_cache(kv),
                                     position_ids=torch.arange(p, p + width, device=device).expand(len(chunk), -1),
                                     use_cache=True).last_hidden_state
                for r, k in enumerate(chunk):
                    h = hidden[r, :len(g.suffixes[k])]
                    hidden_of[k] = torch.cat([prefix_last, h]) if with_prefix_last else h
            out += [hidden_of[k] for k in range(len(g.suffixes))]
        return out

    def _unpack(self, groups):
        rows, cand = [], 0
        for g in groups:
            for s in g.suffixes:
                ids = list(g.prefix) + list(s)
                p = len(g.prefix)
                rows.append({"ids": ids, "segments": [0] * len(ids), "positions": list(range(len(ids))),
                             "answers": [(cand, len(ids) - 1)], "spans": [(cand, [p - 1] + list(range(p, len(ids) - 1)))]})
                cand += 1
        return rows

    def _pack(self, groups):
        rows, cand = [], 0
        for g in groups:
            p = len(g.prefix)
            row = None
            for s in g.suffixes:
                if row is None or len(row["ids"]) + len(s) > max(self.pack_max_tokens, p + len(s)):
                    row = {"ids": list(g.prefix), "segments": [0] * p, "positions": list(range(p)), "answers": [],
                           "spans": []}
                    rows.append(row)
                seg = len(row["answers"]) + 1
                start = len(row["ids"])
                row["spans"].append((cand, [p - 1] + list(range(start, start + len(s) - 1))))
                row["ids"] += s
                row["segments"] += [seg] * len(s)
                row["positions"] += range(p, p + len(s))
                row["answers"].append((cand, len(row["ids"]) - 1))
                cand += 1
        return rows

    def _batches(self, rows):
        """Micro-batches of at most batch_max_tokens padded tokens, longest rows first."""
        width = self.fixed_length
        if width is None:
            rows = sorted(rows, key=lambda r: len(r["ids"]), reverse=True)
        batch = []
        for row in rows:
            if batch and (len(batch) + 1) * (width or len(batch[0]["ids"])) > self.batch_max_tokens:
                yield batch
                batch = []
            batch.append(row)
        if batch:
            yield batch

    def _forward(self, batch):
        device = next(self.model.parameters()).device
        width = max([len(r["ids"]) for r in batch] + [self.fixed_length or 0])
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        seg = torch.full((len(batch), width), -1, dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        for b, r in enumerate(batch):
            n = len(r["ids"])
            self.tokens_seen += n
            ids[b, :n] = torch.tensor(r["ids"])
            seg[b, :n] = torch.tensor(r["segments"])
            pos[b, :n] = torch.tensor(r["positions"])
        q_seg, k_seg = seg[:, :, None], seg[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = ((k_seg == 0) | (k_seg == q_seg)) & (k_seg >= 0) & causal
        allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no NaN)
        dtype = output_weight(self.model).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        out = decoder_of(self.model)(
            inputs_embeds=self._embed(ids.to(device)), attention_mask=mask[:, None].to(device), position_ids=pos.to(device), use_cache=False,
        )
        return out.last_hidden_state
