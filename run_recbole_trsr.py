"""Run a recbole-trsr or RecBole model, with RecBole's command-line conventions.

    python run_recbole_trsr.py --model=LLMTRSR --dataset=ml-100k
    python run_recbole_trsr.py --model=SASRec --dataset=ml-100k --config_files="a.yaml b.yaml" --epochs=5
    python run_recbole_trsr.py --model=LLMTRSR,SASRec,GRU4Rec --dataset=ml-100k   # comparison table

Any other ``--key=value`` overrides a config key (highest priority).
"""
import sys

from recbole_trsr.quick_start import main

if __name__ == "__main__":
    main(sys.argv[1:])
