"""Run a recbole-trsr or RecBole model, with RecBole's command-line conventions.

    python run_recbole_trsr.py --model=LLMTRSR --dataset=ml-100k
    python run_recbole_trsr.py --model=SASRec --dataset=ml-100k --config_files="a.yaml b.yaml" --epochs=5
    python run_recbole_trsr.py --model=LLMTRSR,SASRec,GRU4Rec --dataset=ml-100k   # comparison table

Any other ``--key=value`` overrides a config key (highest priority).
"""
import argparse
import sys

from recbole_trsr.quick_start import compare, run

OWN_ARGS = ("--model", "-m", "--dataset", "-d", "--config_files")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="LLMTRSR", help="model name, or a comma-separated list to compare")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help='space-separated YAML files, e.g. "a.yaml b.yaml"')
    args, _ = parser.parse_known_args(argv)
    overrides = [a for a in argv if not a.split("=")[0] in OWN_ARGS]
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    models = [m for m in args.model.split(",") if m]
    if len(models) == 1:
        run(models[0], args.dataset, config_files, argv=overrides)
        return
    _, table = compare(models, args.dataset, config_files, argv=overrides)
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
