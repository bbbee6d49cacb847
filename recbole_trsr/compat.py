"""RecBole 1.2.1 on numpy 2: the aliases its code still uses, put back before it runs.

RecBole's ``Config.compatibility_settings`` (run by every ``Config()``) assigns
``np.float = np.float_``, ``np.complex = np.complex_`` and ``np.unicode = np.unicode_``; numpy 2
removed the right-hand sides, so the first ``Config`` raises AttributeError. Its metrics and
dataset code then use ``np.float`` / ``np.bool``, which that same method re-creates, so the three
names below are the whole fix for the code paths the plugin runs (configurator, dataset,
sampler, trainer, evaluator: tested under numpy 2 in ``tests/test_compat.py``).

Ray (``np.bool8``) is not covered: only RecBole's hyper-parameter search imports it, and the
plugin never does. ``recbole_trsr/__init__.py`` applies this on import, before RecBole's
``Config`` can run; the aliases are only added where numpy lacks them (numpy 1 is untouched).
"""
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
