"""What RecBole 1.2.1's import-time anomaly mode cost a LoRA training step, and that the plugin removes it.

    python benchmarks/anomaly_mode.py

RecBole's ``sine.py`` runs ``torch.autograd.set_detect_anomaly(True)`` when its package is imported,
which the first lookup of any sequential model (SASRec, GRU4Rec, DELRec's SR model) does. Each row
is a fresh process that first looks a model up one way, then times benchmarks/train.py's step
(SmolLM2-135M + LoRA r=8 in the top 10 layers, 16 rows of 100-420 tokens, ``auto`` dtype) and 20
training batches of RecBole's SASRec on ml-100k (its defaults: batches of 2048 sequences of up to 50
items):
* ``none``: no RecBole model looked up (the baseline);
* ``recbole``: ``recbole.utils.get_model("SASRec")``, RecBole's own lookup (what the plugin did before);
* ``plugin``: ``recbole_trsr.registry.get_model("SASRec")``, which puts the anomaly state back (the
  SASRec workload's baseline: it cannot run without a lookup).
"""
import torch

from common import peak_rss_mb, record, run_variant, table, variant_main
from train import measure as train_step

VARIANT = "bucketed:10:auto"


def sasrec_batches(n=20):
    """Seconds for ``n`` training batches of SASRec on ml-100k (forward, backward, Adam step)."""
    import time

    from recbole.data import data_preparation

    from recbole_trsr.config import TRSRConfig
    from recbole_trsr.data import create_dataset
    from recbole_trsr.registry import get_model

    config = TRSRConfig("SASRec", "ml-100k", config_dict={"show_progress": False})
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = get_model("SASRec")(config, train._dataset)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    batches = iter(train)
    start = None
    for i in range(n + 1):
        if i == 1:
            start = time.perf_counter()  # the first batch is the warm-up
        loss = model.calculate_loss(next(batches))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def measure(variant):
    workload, lookup = variant.split(":")
    if lookup == "recbole":
        from recbole.utils import get_model

        get_model("SASRec")
    elif lookup == "plugin":
        from recbole_trsr.registry import get_model

        get_model("SASRec")
    anomaly = torch.is_anomaly_enabled()
    if workload == "sasrec":
        result = {"seconds": sasrec_batches(), "dtype": "float32", "peak_rss_mb": peak_rss_mb()}
    else:
        result = train_step(VARIANT)
    result.update(workload=workload, lookup=lookup, anomaly=anomaly)
    return result


def report():
    rows = []
    for workload, what, lookups in (("llm", "LLM step (SmolLM2-135M + LoRA), seconds per step", ("none", "recbole", "plugin")),
                                    ("sasrec", "SASRec on ml-100k, seconds per 20 batches", ("plugin", "recbole"))):
        runs = [run_variant(__file__, f"{workload}:{lookup}") for lookup in lookups]
        base = runs[0]["seconds"]
        rows += [[what, r["lookup"], r["dtype"], "on" if r["anomaly"] else "off", f"{r['seconds']:.2f}",
                  f"{r['seconds'] / base:.2f}x", f"{r['peak_rss_mb']:.0f}"] for r in runs]
    text = table(["workload", "SASRec looked up by", "dtype", "anomaly mode", "seconds", "vs the first row", "peak RSS MB"],
                 rows)
    text += (f"\n\nLLM: benchmarks/train.py's step ({VARIANT}: 16 rows of 100-420 tokens, forward + backward + "
             "AdamW, LoRA r=8 in the top 10 layers), one warm-up step then one timed. SASRec: RecBole's defaults "
             "on ml-100k, one warm-up batch then 20 timed. SASRec is always looked up (by the plugin's registry after the lookup named); each workload's first row is its baseline. Each row in a fresh process; 'none' looks no model up")
    print(text)
    record("Training: RecBole's import-time anomaly mode", "python benchmarks/anomaly_mode.py", text)


if __name__ == "__main__":
    variant_main(measure, report)
