"""A training step and an evaluation step traced on fake tensors: the run's memory, with no weights read.

The model is built from its ``config.json`` on the meta device, its adapters attached as the run
attaches them (:mod:`recbole_trsr.llm.adapters`, :func:`recbole_trsr.llm.memory.prepare_for_training`),
and every parameter swapped for a ``FakeTensor`` (shape and dtype, no storage). The step then runs the
scorer's own code (:class:`recbole_trsr.llm.scoring.AnswerScorer`) and the optimizer, while
:class:`LiveBytes` adds up the storages each op creates until they are freed: the peak is what the
allocator would hold, to the byte, on any device (``tests/test_memory_trace.py`` compares it with the
CPU allocator's own count on a real step, :func:`allocator_peak`).

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: its module hooks keep the gradient of
each checkpointed layer's input alive, so under gradient checkpointing it measures a step that uses
about 5% more memory than the same step without it (measured on this CPU); it also refuses a module
called twice in a step (the decoder runs once per micro-batch here).

Pitfalls handled here: parameters cannot be moved onto fake tensors with ``.to()`` (they are built on
``meta`` and replaced); on a CPU-only torch a fake ``cuda`` device fails at the first indexing op, so
the trace runs on a fake ``cpu`` device (memory does not depend on it); bitsandbytes' k-bit layers
cannot be built without weights, so a k-bit run is traced with its linear layers in the compute dtype
and everything else cast to fp32 as peft's k-bit preparation does; the k-bit weight bytes themselves
are computed (:func:`recbole_trsr.memory_plan.weight_bytes`).
"""
import weakref
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

from recbole_trsr.known_warnings import silenced
from recbole_trsr.llm.adapters import freeze_rank_counts
from recbole_trsr.llm.memory import prepare_for_training
from recbole_trsr.llm.scoring import AnswerScorer, Group


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, followed op by op.

    Each op's outputs are counted from the moment the op returns until their storage is freed;
    tensors that exist before are added with :meth:`count`. Views share a storage and count once.
    ``peak`` is the highest total seen; :meth:`reset_peak` starts a new one from the current total."""

    def __init__(self):
        super().__init__()
        self._known = WeakIdKeyDictionary()  # storage -> its bytes when last seen
        self.current = 0
        self.peak = 0

    def count(self, *tensors):
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return self

    def reset_peak(self):
        self.peak = self.current

    def _add(self, t):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            return
        size = storage.nbytes()
        old = self._known.get(storage)
        if old is None:
            weakref.finalize(storage, self._freed, storage_size=[size], known=self._known, owner=weakref.ref(self))
            self._known[storage] = size
            self.current += size
        elif old != size:  # resized in place
            self._known[storage] = size
            self.current += size - old
        self.peak = max(self.peak, self.current)

    @staticmethod
    def _freed(storage_size, known, owner):
        tracker = owner()
        if tracker is not None:
            tracker.current -= storage_size[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._add, out)
        return out


def _state_tensors(model, optimizer):
    tensors = [p for p in model.parameters()] + [b for b in model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


@dataclass
class FakeLLM:
    """A causal LM with its adapters on fake tensors, and the fake mode that owns them."""

    model: torch.nn.Module
    mode: FakeTensorMode
    weight_bytes: int  # of the fake parameters, as built (compute dtype; a k-bit run's are computed apart)


def fake_llm(config, dtype, adapter_config=None, gradient_checkpointing=False, kbit=None):
    """The model of ``config`` (a ``PretrainedConfig``) in ``dtype`` on fake tensors, prepared and adapted
    as :class:`recbole_trsr.model.llmtrsr.LLMTRSR` does (``adapter_config``: a peft config or None).
    ``kbit`` (``4bit`` / ``8bit``): the parameters outside the decoder's linear layers in fp32, as peft's
    ``prepare_model_for_kbit_training`` leaves a k-bit model, and the linear layers keeping for the
    backward what bitsandbytes' layers keep (their weights stay in ``dtype``: computed apart)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    settings = config.to_dict()
    settings.pop("quantization_config", None)  # a loaded k-bit model's: its weights are computed apart
    config = type(config).from_dict(settings)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.config.use_cache = False
    if kbit:
        linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
        for p in model.parameters():
            if all(p is not m.weight for m in linears):
                p.data = p.data.to(torch.float32)
        for m in linears:
            m.forward = _kbit_forward(m, dtype, saves_cast_input=kbit == "4bit")
    for p in model.parameters():
        p.requires_grad_(False)
    with silenced("peft-is-gradient-checkpointing"):
        model = prepare_for_training(model, gradient_checkpointing)
        if adapter_config is not None:
            model = freeze_rank_counts(get_peft_model(model, adapter_config))
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        swapped = {}
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    if id(p) not in swapped:  # tied weights stay tied
                        swapped[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                            requires_grad=p.requires_grad)
                    module._parameters[name] = swapped[id(p)]
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = torch.empty(b.shape, dtype=b.dtype)
    weights = sum(p.numel() * p.element_size() for p in swapped.values() if not p.requires_grad)
    return FakeLLM(model, mode, weights)


class _SavesInput(torch.autograd.Function):
    """A frozen linear layer whose backward keeps its input as given (LLM.int8 keeps ``A`` itself)."""

    @staticmethod
    def forward(ctx, x, weight, bias, compute_dtype):
        ctx.save_for_backward(x, weight)
        return torch.nn.functional.linear(x.to(compute_dtype), weight, bias).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return (grad.to(weight.dtype) @ weight).to(x.dtype), None, None, None


def _kbit_forward(linear, compute_dtype, saves_cast_input):
    """A bitsandbytes k-bit linear layer's dtypes and saved tensors. Its output comes back in the
    input's dtype (fp32 once peft's preparation has made the norms fp32). 4-bit (``MatMul4Bit``) casts
    the input to the compute dtype and keeps that cast for the backward; 8-bit (``MatMul8bitLt``) keeps
    the input as it came."""
    def forward(x):
        if saves_cast_input:
            return torch.nn.functional.linear(x.to(compute_dtype), linear.weight, linear.bias).to(x.dtype)
        return _SavesInput.apply(x, linear.weight, linear.bias, compute_dtype)
    return forward


def build_optimizer(params, learner="adam", learning_rate=1e-3, weight_decay=0.0):
    """The optimizer RecBole's trainer builds for ``learner`` (its ``_build_optimizer``)."""
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                  "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}
    if learner.lower() not in optimizers:
        raise ValueError(f"learner={learner!r}: the memory trace knows {sorted(optimizers)}")
    return optimizers[learner.lower()](params, lr=learning_rate, weight_decay=weight_decay)


def training_step(model, scorer, groups, labels, optimizer, backward_per_micro_batch, clip_grad_norm=None,
                  accumulation_steps=1):
    """One optimizer step as :class:`recbole_trsr.trainer.TRSRTrainer` runs it: the loss (each
    micro-batch backpropagated as it is computed, or one backward over the whole graph), gradient
    clipping, the optimizer's step and ``zero_grad``."""
    scale = 1.0 / accumulation_steps
    if backward_per_micro_batch:
        scorer.answer_loss(groups, labels, backward_scale=scale)
    else:
        (scorer.answer_loss(groups, labels) * scale).backward()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], **clip_grad_norm)
    optimizer.step()
    optimizer.zero_grad()


def synthetic_groups(shapes, vocab_size, first_id=10):
    """Groups of the given ``(prefix_tokens, [suffix_tokens, ...])`` shapes (the ids do not matter to
    memory)."""
    ids = lambda n: [first_id + i % max(1, vocab_size - first_id) for i in range(n)]  # noqa: E731
    return [Group(ids(p), [ids(s) for s in suffixes]) for p, suffixes in shapes]


@dataclass
class StepTrace:
    """Bytes of one traced step: ``resident`` alive before it (weights, adapters, optimizer state),
    ``step`` its peak above that, ``peak`` the sum."""

    resident: int
    step: int

    @property
    def peak(self):
        return self.resident + self.step


def _scorer(model, kwargs):
    kwargs = dict(kwargs)
    yes, no = kwargs.pop("answer_ids", (0, 1))
    return AnswerScorer(model, yes, no, kwargs.pop("pad_id", 0), **kwargs)


def trace_training(fake, groups, labels, scorer_kwargs, backward_per_micro_batch=True, learner="adam",
                   clip_grad_norm=None, accumulation_steps=1):
    """Trace a steady-state training step of ``fake`` (a :class:`FakeLLM`): one step first creates the
    optimizer's state, the second is measured."""
    model = fake.model
    model.train()
    # anomaly mode's NaN checks read tensor values, which fake tensors do not have
    with fake.mode, torch.autograd.set_detect_anomaly(False):
        scorer = _scorer(model, scorer_kwargs)
        optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], learner)
        labels = torch.as_tensor(labels)
        step = lambda: training_step(model, scorer, groups, labels, optimizer, backward_per_micro_batch,  # noqa: E731
                                     clip_grad_norm, accumulation_steps)
        step()
        live = LiveBytes()
        with live:
            live.count(*_state_tensors(model, optimizer), labels)
            resident = live.current
            step()
    return StepTrace(resident, live.peak - resident)


def _trace_inference(model, step):
    """The peak of ``step()`` (no gradients) above the model's parameters and buffers."""
    live = LiveBytes()
    with live:
        live.count(*model.parameters(), *model.buffers())
        resident = live.current
        step()
    return StepTrace(resident, live.peak - resident)


def trace_evaluation(fake, group, scorer_kwargs):
    """Trace the scoring of one user's candidates (``kv`` scoring: the prefix once, its cache shared)."""
    model = fake.model
    model.eval()
    with fake.mode, torch.no_grad():
        scorer = _scorer(model, scorer_kwargs)
        return _trace_inference(model, lambda: scorer.yes_no_logits([group]))


def trace_summarizing(fake, rows, prompt_tokens, max_new_tokens, generator_kwargs, decode_steps=2):
    """Trace the summarizer's loop decoder on one batch of ``rows`` prompts of ``prompt_tokens`` (no shared
    prefix, no row ending early: its worst case). Its key/value buffers are allocated for every new token
    before the prefill, so the prefill and the first ``decode_steps`` steps hold the peak; later steps
    repeat those shapes. ``generator_kwargs``: :class:`~recbole_trsr.llm.generation.LLMGenerator`'s."""
    from types import SimpleNamespace

    from recbole_trsr.llm.generation import LLMGenerator

    model = fake.model
    model.eval()
    vocab = model.config.get_text_config().vocab_size
    # The decoder reads only these two ids of its tokenizer; the prompts are token ids already.
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    with fake.mode, torch.no_grad():
        generator = LLMGenerator(model, tokenizer, max_new_tokens=max_new_tokens, use_chat_template=False,
                                 **dict(generator_kwargs, share_prefix=False, drop_finished=False))
        ids = [[2 + (r * prompt_tokens + i) % (vocab - 2) for i in range(prompt_tokens)] for r in range(rows)]
        return _trace_inference(model, lambda: generator.generate_batch(ids, decode_steps=decode_steps))


def allocator_peak(step):
    """Bytes the CPU allocator held at its peak during ``step()`` above what it held when it began,
    read from the profiler's allocation records (each carries the allocator's running total)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = []

    def walk(node):
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            records.append((node.start_time_ns, node.extra_fields.total_allocated, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    if not records:
        return 0
    records.sort()
    start = records[0][1] - records[0][2]  # the total before the first allocation
    return max(total for _, total, _ in records) - start


def measured_training(model, groups, labels, scorer_kwargs, backward_per_micro_batch=True, learner="adam"):
    """What :func:`trace_training` predicts, measured on a real (CPU) model: the allocator's peak of a
    steady-state step above what was resident when it began."""
    model.train()
    scorer = _scorer(model, scorer_kwargs)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], learner)
    labels = torch.as_tensor(labels)

    def step():
        training_step(model, scorer, groups, labels, optimizer, backward_per_micro_batch)

    step()  # the optimizer's state exists from here on
    return allocator_peak(step)

