"""RecBole's dataset pipeline gives the same datasets and metrics under pandas 2 and pandas 3.

The installed pandas (the lock's) runs ``tests/pandas_probe.py`` in one subprocess; the other major,
installed by ``make`` into ``.venv/pandas-other`` (``PANDAS_OTHER`` names another folder), runs it in
a second one, put first on ``PYTHONPATH``. Both must write the same digests.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas
import pytest

from recbole_trsr.compat import PANDAS3_PATCHES, pandas_major, patch_recbole_for_pandas3

ROOT = Path(__file__).resolve().parent.parent
OTHER = Path(os.environ.get("PANDAS_OTHER", ROOT / ".venv" / "pandas-other"))


def _probe(tmp_path, name, pythonpath=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath)] + [p for p in [env.get("PYTHONPATH")] if p])
    out = tmp_path / f"{name}.json"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "pandas_probe.py"), str(out), str(tmp_path / name)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_patches_apply_only_under_pandas_3():
    from recbole.data.dataset import dataset as recbole_dataset

    import recbole_trsr.data  # noqa: F401  (applies them on import)

    patched = [hasattr(getattr(recbole_dataset.Dataset, name), "__wrapped__") for name in PANDAS3_PATCHES]
    assert all(patched) if pandas_major() >= 3 else not any(patched)
    assert patch_recbole_for_pandas3() == []  # idempotent


def test_both_pandas_majors_build_the_same_datasets_and_metrics(tmp_path):
    if not (OTHER / "pandas").is_dir():
        pytest.fail(f"no second pandas at {OTHER}: `make venv` installs it (or set PANDAS_OTHER)")
    here, other = _probe(tmp_path, "installed"), _probe(tmp_path, "other", OTHER)
    assert {here.pop("pandas_major"), other.pop("pandas_major")} == {2, 3}
    assert here == other
    shop = here["empty-cells-shop"]
    assert shop["item_feat"]["title"][1][0] == 41 and 0 <= shop["LLMTRSR"]["ndcg@10"] <= 1  # 40 items + padding
