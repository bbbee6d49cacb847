"""RecBole ``Config`` with the plugin's model lookup and YAML layering."""
import logging
import os
from pathlib import Path

import yaml

from recbole_trsr.compat import require_recbole

require_recbole()
from recbole.config import Config  # noqa: E402

from recbole_trsr import PROPERTIES_DIR
from recbole_trsr.distributed import init_distributed
from recbole_trsr.distributed.launch import is_multi_process, launch_settings
from recbole_trsr.registry import get_model

RECBOLE_EXAMPLES = Path(__import__("recbole").__file__).resolve().parent / "dataset_example"


class TRSRConfig(Config):
    """Config whose layers are, lowest first:

    RecBole's own internal YAMLs, ``properties/overall.yaml``,
    ``properties/model/<MODEL>.yaml``, ``properties/dataset/<DATASET>.yaml``,
    then the user's ``config_file_list``, ``config_dict`` and the command line.

    Unlike RecBole's Config, the command line is read from ``argv`` (default: none), so a
    notebook or a test never picks up its host's arguments; the script passes ``sys.argv[1:]``.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, argv=None):
        self._argv = list(argv or [])
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self):
        cmd_config_dict, ignored = {}, []
        for arg in self._argv:
            if not arg.startswith("--") or "=" not in arg:
                ignored.append(arg)
                continue
            name, value = arg[2:].split("=", 1)
            if name in cmd_config_dict and cmd_config_dict[name] != value:
                raise SyntaxError(f"duplicate command-line argument '{arg}' with a different value")
            cmd_config_dict[name] = value
        if ignored:
            logging.getLogger().warning("command-line args %s are not --key=value and are ignored", ignored)
        return self._convert_config_dict(cmd_config_dict)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("no model given: pass --model=NAME (a plugin model or any RecBole model)")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("no dataset given: pass --dataset=NAME")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        # Applied after super(): RecBole's dataset/*.yaml (e.g. its ml-100k load_col) would
        # otherwise overwrite the plugin's settings.
        for path in self.plugin_yaml_files(model, dataset):
            with open(path, encoding="utf-8") as f:
                loaded = yaml.load(f.read(), Loader=self.yaml_loader) or {}
            self.internal_config_dict.update(loaded)
            if path.parent.name == "dataset":
                self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _init_device(self):
        # A worker of a multi-process run (it has a local_rank) joins the group with the plugin's
        # backend choice (gloo on CPU, nccl on CUDA); RecBole's own is nccl and CUDA only.
        if "local_rank" in self.final_config_dict:
            init_distributed(self.final_config_dict)
            return
        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        super()._init_device()
        keys = ("nproc", "world_size", "ip", "port", "offset")
        if is_multi_process(launch_settings({k: self.final_config_dict.get(k) for k in keys})):
            # The launcher of several workers: RecBole just exported its gpu_id (default '0'), which the
            # workers would inherit and all see one GPU; each worker chooses its own (init_distributed).
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before

    @staticmethod
    def plugin_yaml_files(model, dataset):
        """The plugin's YAML files that apply to ``model`` on ``dataset``, lowest priority first."""
        candidates = [
            PROPERTIES_DIR / "overall.yaml",
            PROPERTIES_DIR / "model" / f"{model}.yaml",
            PROPERTIES_DIR / "dataset" / f"{dataset}.yaml",
        ]
        return [p for p in candidates if p.is_file()]

    def _set_default_parameters(self):
        final = self.final_config_dict
        # RecBole's defaults make `--model=SASRec` fail (CE loss with negative sampling on);
        # a CE model gets no training negatives unless the user asked for them.
        if final.get("loss_type") == "CE" and "train_neg_sample_args" not in self.external_config_dict:
            final["train_neg_sample_args"] = None
        user_root = final["data_path"]
        super()._set_default_parameters()
        # RecBole forces ml-100k to its bundled copy and never looks in data_path; we prefer
        # the user's copy and fall back to the bundled one for any dataset shipped with RecBole.
        user_dir = os.path.join(user_root, self.dataset)
        bundled = RECBOLE_EXAMPLES / self.dataset
        if os.path.isfile(os.path.join(user_dir, f"{self.dataset}.inter")):
            self.final_config_dict["data_path"] = user_dir
        elif (bundled / f"{self.dataset}.inter").is_file():
            self.final_config_dict["data_path"] = str(bundled)
        else:
            self.final_config_dict["data_path"] = user_dir
