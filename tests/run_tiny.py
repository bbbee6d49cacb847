"""A child process for tests/test_resume.py: one run of ``recbole_trsr.quick_start.run`` with the JSON
config given as the first argument; prints its metrics, checkpoint and a digest of the checkpoint's
weights as JSON on the last line."""
import hashlib
import json
import sys

import torch

from recbole_trsr.quick_start import run
from recbole_trsr.trainer.checkpoint import load_checkpoint


def weights_digest(path):
    h = hashlib.sha256()
    for name, tensor in sorted(load_checkpoint(path)["state_dict"].items()):
        h.update(name.encode())
        h.update(tensor.to(torch.float32).numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    model, dataset, nproc = config.pop("model"), config.pop("dataset"), config.pop("nproc", None)
    result = run(model, dataset, config_dict=config, nproc=nproc)
    print(json.dumps({"test_result": {k: float(v) for k, v in result["test_result"].items()},
                      "checkpoint": result["checkpoint"], "weights": weights_digest(result["checkpoint"]),
                      "state_saves": result.get("state_saves")}))
