"""recbole-trsr: LLM-based text-rich sequential recommenders (LLM-TRSR, DELRec) for RecBole.

Where things live:
    compat.py              numpy 2 and pandas 3 patches RecBole 1.2.1 needs (applied on import)
    config.py              Config with the plugin's YAML layering
    registry.py            model lookup (plugin first, then RecBole)
    quick_start.py         run() and the command-line runner
    explain.py             one user's blocks, summaries, prompt and ranked candidates
    memory_plan.py         per-GPU memory of a run (its steps traced on fake tensors), the levers that fit
    sr_model.py            the RecBole SR model a run attaches (DELRec's teacher, a full-sort retriever)
    faults.py              TRSR_FAULT kill points for the interrupted-run tests
    data/                  dataset with absolute history positions, item-id -> text table, negatives
    llm/                   backbone loading (hub id, folder, GGUF; k-bit), adapters, memory levers and
                           their trace on fake tensors, Yes/No scoring (fp32 head), the summarizer's decoder
    summarize/             block segmentation, hierarchical / recurrent LLM summarizer, store, engines
    prompt.py              recommender prompt building under token budgets, chat frames
    model/                 LLMTRSR and DELRec RecBole models
    trainer/               trainers, learning-rate schedules, the safe checkpoint format, resumable state
    evaluation/            what decides a published number: the tie rule, fixed sampled candidates,
                           per-user outcomes, bootstrap CIs, reports, the evaluation journal
    distributed/           several processes and machines
    analysis/              research diagnostics (reference summaries, summary content and reliance,
                           history signal); nothing of the product path imports it
"""
from pathlib import Path

from recbole_trsr.compat import add_numpy2_aliases

add_numpy2_aliases()  # before any RecBole Config runs (see compat.py)

__version__ = "0.1.0"

#: Root of the repository's ``properties/`` folder (RecBole YAMLs of the plugin).
PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"
