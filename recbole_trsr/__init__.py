"""recbole-trsr: LLM-based text-rich sequential recommenders (LLM-TRSR, DELRec) for RecBole.

Where things live:
    config.py              Config with the plugin's YAML layering
    registry.py            model / trainer lookup (plugin first, then RecBole)
    quick_start.py         run() and the command-line runner
    data/                  dataset with absolute history positions, item-id -> text table
    llm/                   backbone loading (hub id, folder, GGUF), Yes/No scoring
    summarize/             block segmentation, hierarchical / recurrent summarizer, disk store
    prompt.py              recommender prompt building under token budgets
    model/                 LLMTRSR (and DELRec) RecBole models
    trainer/               trainers and the safe checkpoint format
"""
from pathlib import Path

__version__ = "0.1.0"

#: Root of the repository's ``properties/`` folder (RecBole YAMLs of the plugin).
PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
