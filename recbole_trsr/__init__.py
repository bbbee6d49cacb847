"""recbole-trsr: LLM-based text-rich sequential recommenders (LLM-TRSR, DELRec) for RecBole.

Where things live:
    compat.py              numpy 2 aliases RecBole 1.2.1 needs (applied on import, below)
    config.py              Config with the plugin's YAML layering
    registry.py            model lookup (plugin first, then RecBole)
    quick_start.py         run() and the command-line runner
    data/                  dataset with absolute history positions, item-id -> text table
    llm/                   backbone loading (hub id, folder, GGUF), Yes/No scoring
    summarize/             block segmentation, hierarchical / recurrent summarizer, disk store
    prompt.py              recommender prompt building under token budgets
    model/                 LLMTRSR (and DELRec) RecBole models
    trainer/               trainers, trainer lookup, the safe checkpoint format
    evaluation/            fixed sampled candidates, per-user outcomes, bootstrap CIs, reports
"""
from pathlib import Path

from recbole_trsr.compat import add_numpy2_aliases

add_numpy2_aliases()  # before any RecBole Config runs (see compat.py)

__version__ = "0.1.0"

#: Root of the repository's ``properties/`` folder (RecBole YAMLs of the plugin).
PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
