"""RecBole 1.2.1 on today's numpy and pandas, with RecBole installed unmodified.

numpy 2: the aliases its code still uses, put back before it runs.

RecBole's ``Config.compatibility_settings`` (run by every ``Config()``) assigns
``np.float = np.float_``, ``np.complex = np.complex_`` and ``np.unicode = np.unicode_``; numpy 2
removed the right-hand sides, so the first ``Config`` raises AttributeError. Its metrics and
dataset code then use ``np.float`` / ``np.bool``, which that same method re-creates, so the three
names below are the whole fix for the code paths the plugin runs (configurator, dataset,
sampler, trainer, evaluator: tested under numpy 2 in ``tests/test_compat.py``).

Ray (``np.bool8``) is not covered: only RecBole's hyper-parameter search imports it, and the
plugin never does. ``recbole_trsr/__init__.py`` applies this on import, before RecBole's
``Config`` can run; the aliases are only added where numpy lacks them (numpy 1 is untouched).

pandas 3: see :func:`patch_recbole_for_pandas3` below (applied where RecBole is first imported).

Anomaly mode: see :func:`import_recbole_sequential_models` (applied where RecBole models are looked up).
"""
import functools

import numpy

#: removed name -> the numpy 2 name it stood for.
NUMPY2_ALIASES = {"float_": "float64", "complex_": "complex128", "unicode_": "str_"}


def add_numpy2_aliases(np_module=numpy):
    """Add each alias of :data:`NUMPY2_ALIASES` that ``np_module`` lacks; return the names added."""
    added = []
    for old, new in NUMPY2_ALIASES.items():
        if not hasattr(np_module, old):
            setattr(np_module, old, getattr(np_module, new))
            added.append(old)
    return added


def require_recbole():
    """Import RecBole, or say how to install it without its ``ray<=2.6.3`` pin."""
    try:
        import recbole  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "recbole-trsr needs RecBole 1.2.1. Its metadata pins ray<=2.6.3, which has no wheels for "
            "Python >= 3.12, and the plugin never imports ray, so install it without dependencies: "
            "pip install --no-deps recbole==1.2.1 (its other requirements come with recbole-trsr)"
        ) from exc


def import_recbole_sequential_models():
    """Import ``recbole.model.sequential_recommender`` and undo the anomaly mode its import turns on.

    RecBole 1.2.1's ``sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at module level, and
    the package's ``__init__`` imports it, so the first lookup of any sequential model (SASRec,
    GRU4Rec, the SR model DELRec trains first) left autograd checking every backward for the rest of
    the process: slower steps for every model trained after it, and fake-tensor tracing
    (``llm/memory_trace.py``) fails on its NaN checks. The state from before the import is put back,
    so a user who enabled anomaly mode on purpose keeps it.
    """
    import torch

    before = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(*before)


# --- pandas 3 -------------------------------------------------------------------------------------
# RecBole 1.2.1's dataset pipeline was written for pandas 1-2. Under pandas 3 three of its idioms change
# meaning (measured against pandas 2.3.3 on the same files, tests/test_pandas_versions.py):
#   * copy-on-write: ``df[field].fillna(..., inplace=True)`` through chained indexing is a no-op
#     (``ChainedAssignmentError``). In ``_load_feat`` the empty cells of *_seq fields stay NaN and the
#     next line's ``str.split`` fails on them; in ``_fill_nan`` missing floats silently stay NaN.
#   * ``Series.agg(len)`` returns the length of the Series, no longer each element's length, so the
#     split points of token/float sequences are wrong in ``_remap`` (the ValueError "Length of values
#     (1) does not match length of index"), ``_normalize`` and ``_discretization``.
#   * the default string dtype ("str"): RecBole only reads it through ``.values``/``np.concatenate``,
#     which turn it into the same object arrays as before, so it needs no patch.
# Each patch below restores the pandas 2 meaning in that one method; none is applied under pandas < 3.


def pandas_major(pandas_module=None):
    import pandas

    return int((pandas_module or pandas).__version__.split(".")[0])


class _PandasFillingSequences:
    """Stands for ``pandas`` inside ``recbole.data.dataset.dataset``: ``read_csv`` returns the frame with
    the missing cells of ``*_seq`` columns as "" (what RecBole's no-op ``fillna(value="")`` meant)."""

    def __init__(self, pandas_module):
        self._pandas = pandas_module

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        df = self._pandas.read_csv(*args, **kwargs)
        sequences = [c for c in df.columns if str(c).endswith("_seq")]  # still "field:type" here
        if sequences:
            df[sequences] = df[sequences].fillna("")
        return df


def _quiet_chained_assignment(method):
    """``method`` with pandas 3's ChainedAssignmentError warnings silenced: the assignments they flag
    are redone by the patch that wraps it."""
    import warnings

    from pandas.errors import ChainedAssignmentError

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChainedAssignmentError)
            return method(self, *args, **kwargs)

    return wrapped


def _fill_nan_by_assignment(fill_nan):
    """RecBole's ``_fill_nan``, then its two in-place fills (tokens: 0, floats: the field's mean) redone
    as assignments, which copy-on-write keeps."""
    from recbole.utils import FeatureType

    @functools.wraps(fill_nan)
    def wrapped(self):
        fill_nan(self)
        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                ftype = self.field2type[field]
                if ftype == FeatureType.TOKEN:
                    feat[field] = feat[field].fillna(value=0)
                elif ftype == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(value=feat[field].mean())

    return wrapped


def _elementwise_agg_len(method):
    """``method`` with ``Series.agg(len)`` meaning each element's length, as it did before pandas 3
    (scoped to the call: pandas is restored when it returns)."""
    import pandas

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        original = pandas.Series.agg

        def agg(series, func=None, *a, **k):
            return series.map(len) if func is len else original(series, func, *a, **k)

        pandas.Series.agg = agg
        try:
            return method(self, *args, **kwargs)
        finally:
            pandas.Series.agg = original

    return wrapped


#: RecBole ``Dataset`` method -> the patch that gives it its pandas 2 meaning under pandas 3.
PANDAS3_PATCHES = {
    "_load_feat": _quiet_chained_assignment,
    "_fill_nan": lambda m: _quiet_chained_assignment(_fill_nan_by_assignment(m)),
    "_remap": _elementwise_agg_len,
    "_normalize": _elementwise_agg_len,
    "_discretization": _elementwise_agg_len,
}


def patch_recbole_for_pandas3():
    """Apply :data:`PANDAS3_PATCHES` (and the ``read_csv`` of :class:`_PandasFillingSequences`) when the
    installed pandas is 3 or later; returns the names patched (none under pandas 2; idempotent)."""
    if pandas_major() < 3:
        return []
    from recbole.data.dataset import dataset as recbole_dataset

    if isinstance(recbole_dataset.pd, _PandasFillingSequences):
        return []
    recbole_dataset.pd = _PandasFillingSequences(recbole_dataset.pd)
    for name, patch in PANDAS3_PATCHES.items():
        setattr(recbole_dataset.Dataset, name, patch(getattr(recbole_dataset.Dataset, name)))
    return ["read_csv"] + list(PANDAS3_PATCHES)
