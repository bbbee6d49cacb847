"""First stage of LLMTRSR's ``full_sort_predict``: a cheap model proposes the top-M items."""
import logging

import torch

logger = logging.getLogger(__name__)


class PopularityRetriever(torch.nn.Module):
    """Scores every item by how many users interacted with it in the training split (every user's,
    never the validation or test items: ``dataset.train_item_users``)."""

    def __init__(self, dataset):
        super().__init__()
        counts = torch.as_tensor(dataset.train_item_users, dtype=torch.float32).clone()
        counts[0] = -1.0
        self.register_buffer("counts", counts, persistent=False)
        self.name = "pop"

    def forward(self, interaction):
        return self.counts.expand(interaction.length, -1)


class CheckpointRetriever(torch.nn.Module):
    """A trained, frozen RecBole model (e.g. SASRec; built by ``recbole_trsr.sr_model``) as first stage."""

    def __init__(self, model, name):
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, interaction):
        return self.model.full_sort_predict(interaction)


_announced = set()


def tie_order(n_items, seed):
    """A seeded permutation of the item ids: the order in which :func:`rerank_top_m` takes first-stage
    ties (an item's id would favour old or new items, whichever the id order follows)."""
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(int(seed)))


def rerank_top_m(first_stage, top_m, score_top, describe, order):
    """Two-stage ``full_sort_predict``: ``score_top(top)`` ([B, M] item ids -> [B, M] scores) reranks
    the first stage's top M items; every other item keeps the first stage's order, below them. Items
    tied in the first stage enter the top M in ``order`` (:func:`tie_order`), never by id."""
    first = first_stage.float().clone()
    first[:, 0] = -torch.inf
    order = order.to(first.device)
    m = min(top_m, first.shape[1] - 1)
    in_order = torch.sort(first[:, order], dim=1, descending=True, stable=True).indices[:, :m]
    top = order[in_order]
    out = first - first.max(dim=1, keepdim=True).values - 1e4
    out.scatter_(1, top, score_top(top).to(out.dtype))
    if describe not in _announced:
        logger.info("full_sort_predict: %s proposes the top %d items (ties in a seeded order), the LLM reranks "
                    "them; the other items keep its order", describe, top.shape[1])
        _announced.add(describe)
    return out


def build_retriever(spec, dataset):
    """The first stage ``spec`` names: ``pop`` here; ``{model: SASRec, checkpoint: path}`` is loaded by
    the run (``recbole_trsr.sr_model.attach_sr_models``), so ``None`` until then."""
    if spec in (None, "pop"):
        return PopularityRetriever(dataset)
    if isinstance(spec, dict) and "model" in spec and "checkpoint" in spec:
        return None
    raise ValueError(f"full_sort_retriever must be 'pop' or {{model: NAME, checkpoint: PATH}}, not {spec!r}")
