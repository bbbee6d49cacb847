"""``python -m recbole_trsr.summarize --dataset=D [--model=LLMTRSR] [--key=value ...]``:
precompute (or resume) the summaries of a dataset, then exit."""
import sys

from recbole_trsr.quick_start import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a.startswith("--model") for a in argv):
        argv.append("--model=LLMTRSR")
    main(argv + ["--summarize_only=True"])
