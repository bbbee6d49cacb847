"""Block summaries: segmenting (segment.py), call planning (plan.py), the LLM summarizer
(summarizer.py), the disk store (store.py) and the dataset-level precompute (pipeline.py).

Precompute for a dataset without training:
    python -m recbole_trsr.summarize --dataset=ml-100k [--key=value ...]
"""
