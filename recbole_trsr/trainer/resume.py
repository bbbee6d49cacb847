"""The resumable state of a training run: what it holds, where it lives, how it is written and read.

A state is written every ``save_steps`` optimizer steps or ``save_minutes`` of training, whichever
comes first, and once more when training ends. It holds the trainable weights, the optimizer, the
epoch and the batches of it already done, the partial epoch loss, early-stopping counters, and every
random generator that decides what comes next (torch's global one, which drives dropout; numpy's and
Python's; the training loader's shuffle generator as it was when the epoch began; the model's own
numpy generators, e.g. LLMTRSR's negative sampler), per rank in a multi-process run.

Writing is atomic: the state goes to a temporary file in the same folder, is flushed to disk, and
renamed over ``state.pt``; the state it replaces is kept as ``state.prev.pt``. Each file starts with a
magic line and the SHA-256 of its payload, so a truncated or overwritten file is recognised. Reading
falls back to the previous state (with a warning naming the bad file) and refuses with an error that
names both files when neither is whole: a half-written state is never trained on.
"""
import hashlib
import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from recbole_trsr import faults

logger = logging.getLogger(__name__)

MAGIC = b"recbole-trsr-state/1\n"
#: Settings that do not change what training computes (so a run resumed with them changed is the same run).
VOLATILE_KEYS = {"resume", "save_steps", "save_minutes", "show_progress", "state", "verbose", "device", "gpu_id",
                 "local_rank", "rank", "checkpoint_dir", "log_wandb", "dist_timeout", "summary_progress"}


def settings_digest(plain):
    """A short hash of a run's plain settings, :data:`VOLATILE_KEYS` left out."""
    settings = {k: v for k, v in sorted(plain.items()) if k not in VOLATILE_KEYS}
    return hashlib.sha1(repr(settings).encode("utf-8")).hexdigest()[:12]


def state_dir(config, plain):
    """``<checkpoint_dir>/<model>-<dataset>-<digest of the settings>.resume``: one folder per run setting."""
    return Path(config["checkpoint_dir"]) / f"{config['model']}-{config['dataset']}-{settings_digest(plain)}.resume"


def resume_path(config, plain):
    """The state file a run writes, or reads with ``resume``: ``True`` -> this setting's folder; a path -> that file
    (or ``state.pt`` in that folder); ``False``/``None`` -> the folder, for writing."""
    given = config["resume"]
    if isinstance(given, str) and given.lower() not in ("true", "false", "none", ""):
        path = Path(given)
        return path / "state.pt" if path.is_dir() or not path.suffix else path
    return state_dir(config, plain) / "state.pt"


def wants_resume(config):
    given = config["resume"]
    return bool(given) and str(given).lower() not in ("false", "none", "0")


def write_state(path, state):
    """Write ``state`` (plain data and tensors) to ``path`` atomically, keeping the previous one as ``.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header + payload[:len(payload) // 2])
        f.flush()
        faults.reached("state_write")
        f.write(payload[len(payload) // 2:])
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(header) + len(payload)


def previous(path):
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def read_state(path):
    """The newest whole state at ``path`` (or its ``.prev``); ``None`` if neither file exists."""
    path = Path(path)
    candidates = [p for p in (path, previous(path)) if p.exists()]
    if not candidates:
        return None
    errors = []
    for p in candidates:
        try:
            state = _read_one(p)
        except ValueError as exc:
            errors.append(str(exc))
            logger.warning("resumable state %s is unreadable (%s)%s", p, exc,
                           "; falling back to the previous state" if p == path and len(candidates) > 1 else "")
            continue
        if p != path:
            logger.warning("resuming from the previous state %s", p)
        return state
    raise RuntimeError("no whole resumable state to continue from: " + "; ".join(errors)
                       + ". Delete the folder to start again, or fix the file.")


def _read_one(path):
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a recbole-trsr resumable state (bad header)")
    digest, _, payload = data[len(MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode("ascii") != digest:
        raise ValueError(f"{path} is truncated or corrupt (checksum mismatch, {len(payload)} payload bytes)")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def capture_rng(model, loader_state=None):
    """Every random generator of this process that decides what training does next (plain data)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "model": {name: repr(g.bit_generator.state) for name, g in model_generators(model).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = [t for t in torch.cuda.get_rng_state_all()]
    if loader_state is not None:
        state["loader"] = loader_state
    return state


def restore_rng(model, state):
    """Put back what :func:`capture_rng` captured (the loader's generator is the trainer's business)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    generators = model_generators(model)
    unknown = sorted(set(state["model"]) - set(generators))
    if unknown:
        raise ValueError(f"the resume state holds random generator(s) {unknown} that this model does not have "
                         f"(it has {sorted(generators)}): it was written by another version of the model")
    for name, text in state["model"].items():
        generators[name].bit_generator.state = _literal(text)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_generators(model):
    """The model's own numpy generators by attribute path: attributes holding a ``np.random.Generator``,
    and those of its plain helper objects one level down (e.g. LLMTRSR's ``negatives.rng``)."""
    found = {}
    for name, value in vars(model).items():
        if isinstance(value, np.random.Generator):
            found[name] = value
        elif not isinstance(value, torch.nn.Module) and hasattr(value, "__dict__"):
            found.update({f"{name}.{sub}": g for sub, g in vars(value).items() if isinstance(g, np.random.Generator)})
    return found


def _literal(text):
    import ast

    return ast.literal_eval(text)
