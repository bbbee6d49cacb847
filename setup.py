"""recbole-trsr: LLM-based text-rich sequential recommendation as a RecBole plugin.

Install RecBole itself first, without its dependencies (its metadata pins ray<=2.6.3, which has
no wheels for Python >= 3.12; ray serves only RecBole's hyper-parameter search, which the plugin
never imports):

    pip install --no-deps recbole==1.2.1
    pip install -e .            # or -e '.[ray]' for summarization on Ray (summary_workers > 1)

The plugin's own Ray use takes a modern Ray (>= 2.31, wheels for Python 3.10-3.13), as the
optional extra ``ray``; RecBole's pin is never installed.

RecBole's real runtime requirements (all of its list but ray) are listed here instead. Ranges are
what the code needs; requirements.lock holds the exact set CI tests (see README "Compatibility").
"""
from setuptools import find_packages, setup

RECBOLE_RUNTIME = [  # recbole 1.2.1's Requires-Dist, less ray; its exact colorlog/colorama pins kept
    "scipy>=1.6",
    "tqdm>=4.48.2",
    "colorlog==4.7.2",
    "colorama==0.4.4",
    "scikit-learn>=0.23.2",
    "tensorboard>=2.5",
    "thop>=0.1.1.post2207130030",
    "tabulate>=0.8.10",
    "plotly>=4.0",
    "texttable>=0.9",
    "psutil>=5.9",
]

install_requires = RECBOLE_RUNTIME + [
    "numpy>=1.23,<3",  # numpy 2 through recbole_trsr/compat.py
    # pandas 3 through recbole_trsr/compat.py (RecBole's chained in-place fills and Series.agg(len));
    # tests/test_pandas_versions.py checks the same datasets and metrics under 2.3.3 and 3.1.1.
    "pandas>=1.5,<4",
    "torch>=2.1",
    "transformers>=5.0",
    "peft>=0.17",
    "accelerate>=1.0",
    "gguf>=0.10",
    "pyyaml>=6",
    "safetensors>=0.4",
    "matplotlib>=3.5",  # benchmark charts
]

setup(
    name="recbole-trsr",
    version="0.1.0",
    description="LLM-based text-rich sequential recommendation (LLM-TRSR, DELRec) for RecBole",
    packages=find_packages(include=["recbole_trsr", "recbole_trsr.*", "dataset_converters"]),
    python_requires=">=3.10,<3.14",
    install_requires=install_requires,
    extras_require={"test": ["pytest>=7"], "ray": ["ray>=2.31,<3"],
                    "quant": ["bitsandbytes>=0.46"]},  # llm_quantization (CPU kernels since 0.46)
)
