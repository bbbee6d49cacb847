"""LLM backbone loading (backbone.py) and answer-position scoring (scoring.py)."""
