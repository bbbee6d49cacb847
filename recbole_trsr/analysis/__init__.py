"""Research diagnostics, apart from what decides a published number.

Reference summaries no LLM writes (``field_counts``, ``co_watched``: ``summary_paradigm`` values the
summarizer pipeline reaches by name), and readers of what summaries and histories hold
(``summary_content``, ``summary_reliance``, ``history_signal``), driven by the scripts of the same
names in ``benchmarks/``. Nothing in the product path (``data``, ``llm``, ``summarize``, ``model``,
``trainer``, ``evaluation``, the runner) imports this package; ``tests/test_foundation.py`` checks it.
"""
