"""RecBole 1.2.1 on numpy 2: the shim in recbole_trsr/compat.py is what makes it run."""
import subprocess
import sys
import types

import numpy as np
import pytest

from recbole_trsr.compat import NUMPY2_ALIASES, add_numpy2_aliases

NUMPY2 = int(np.__version__.split(".")[0]) >= 2


def test_aliases_on_a_numpy2_like_module():
    """A module without the removed names gets exactly those names, pointing at numpy 2's types;
    one that has them (numpy 1) is left alone."""
    fake = types.SimpleNamespace(float64=np.float64, complex128=np.complex128, str_=np.str_)
    assert sorted(add_numpy2_aliases(fake)) == sorted(NUMPY2_ALIASES)
    assert fake.float_ is np.float64 and fake.complex_ is np.complex128 and fake.unicode_ is np.str_
    assert add_numpy2_aliases(fake) == []

    numpy1_like = types.SimpleNamespace(float_=float, complex_=complex, unicode_=str,
                                        float64=np.float64, complex128=np.complex128, str_=np.str_)
    assert add_numpy2_aliases(numpy1_like) == []
    assert numpy1_like.float_ is float


def test_recbole_compatibility_settings_need_exactly_these_aliases():
    """RecBole's Config.compatibility_settings (run by every Config) reads only names that numpy 2
    has or that the shim adds: run against a numpy-2-like module, it fails without the shim and
    passes with it."""
    from recbole.config import Config

    def numpy2_like():
        names = ("bool_", "int_", "object_", "str_", "float64", "complex128")
        return types.SimpleNamespace(**{n: getattr(np, n) for n in names})

    fake = numpy2_like()
    real = sys.modules["numpy"]
    sys.modules["numpy"] = fake
    try:
        with pytest.raises(AttributeError):
            Config.compatibility_settings(None)
        add_numpy2_aliases(fake)
        Config.compatibility_settings(None)
    finally:
        sys.modules["numpy"] = real
    assert fake.float is np.float64 and fake.unicode is np.str_


@pytest.mark.skipif(not NUMPY2, reason="numpy < 2 installed: the real-numpy-2 check needs numpy 2 "
                                        "(the fake-module tests above cover the aliases)")
def test_under_numpy2_recbole_config_fails_without_the_shim_and_runs_with_it():
    code = (
        "import sys\n"
        "from recbole.config import Config\n"
        "args = dict(config_dict={'train_neg_sample_args': None})\n"
        "try:\n"
        "    Config('SASRec', 'ml-100k', **args)\n"
        "    sys.exit('Config ran without the shim: numpy 2 no longer needs it')\n"
        "except AttributeError as exc:\n"
        "    assert 'float_' in str(exc), exc\n"
        "import recbole_trsr\n"
        "Config('SASRec', 'ml-100k', **args)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_recbole_dataset_trainer_evaluator_run_on_installed_numpy(data_root, tmp_path):
    """SASRec end to end (dataset, sampler, trainer, evaluator's metrics, which use np.float/np.bool)."""
    from conftest import base_config
    from recbole_trsr.quick_start import run

    result = run("SASRec", "ml-mini", config_dict=base_config(
        data_root, tmp_path, epochs=1, hidden_size=16, inner_size=32, n_layers=1,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}))
    print(f"numpy {np.__version__}: SASRec test {result['test_result']}")
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_looking_up_a_recbole_sequential_model_leaves_anomaly_mode_as_it_was():
    # RecBole's sine.py turns anomaly mode on when its package is imported; a fresh interpreter is
    # needed because this process may have imported it already.
    code = (
        "import torch\n"
        "from recbole_trsr.registry import get_model\n"
        "get_model('SASRec')\n"
        "off = torch.is_anomaly_enabled()\n"
        "import recbole.model.sequential_recommender.sine\n"
        "print(off, 'recbole.model.sequential_recommender.sine' in __import__('sys').modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "True"]  # imported, and anomaly mode still off
