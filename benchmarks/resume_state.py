"""What a resumable state costs on the recipe's row: seconds and MB per save, against the time of the
optimizer steps between saves (same run).

    python benchmarks/resume_state.py      # the recipe on amazon-industrial, 96 training users, a state every step

The state's size does not depend on how many users train (it holds the LoRA weights, Adam's two moments,
the random generators and counters), so a short run measures the full row's cost per save.
"""
import time

from common import ROOT, cache_dir, record, table

USERS, BATCH = 96, 4


def main():
    from recbole_trsr.quick_start import run

    config = {"data_path": str(ROOT.parent / "shared" / "datasets"), "train_users": USERS, "test_users": 20,
              "valid_users": 20, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                                               "mode": "uni20"},
              "save_steps": 1, "save_minutes": 0, "trsr_cache_dir": cache_dir(), "show_progress": False,
              "train_batch_size": BATCH, "gradient_accumulation_steps": 1}
    started = time.perf_counter()
    result = run("LLMTRSR", "amazon-industrial", [str(ROOT / "properties" / "recipe" / "LLMTRSR.yaml")],
                 config_dict=config)
    wall = time.perf_counter() - started
    saves = result["state_saves"]
    seconds, sizes = saves["seconds"], saves["bytes"]
    steps = len(seconds) - 1  # one save per optimizer step, and the final one
    per_save = sum(seconds) / len(seconds)
    rows = [["saves", len(seconds)], ["seconds per save (mean, max)", f"{per_save:.3f}, {max(seconds):.3f}"],
            ["MB per save", f"{sizes[-1] / 2 ** 20:.2f}"], ["optimizer steps", steps],
            ["run wall time s (model load, summaries none, training, test)", f"{wall:.0f}"]]
    text = table(["resumable state, recipe row (amazon-industrial)", "value"], rows)
    text += (f"\n\n{USERS} training users, batches of {BATCH} (1 + 4 candidates each), LoRA r=8 in the top 10 "
             f"layers, a state after every optimizer step. With the default save_minutes: 10, the recipe's "
             f"24-minute row (bf16) writes 4 states (at 10 and 20 minutes, the epoch's end, the end): "
             f"{4 * per_save:.2f} s in all.")
    print(text)
    record("Resumable state: cost per save on the recipe's row", "python benchmarks/resume_state.py", text)


if __name__ == "__main__":
    main()
