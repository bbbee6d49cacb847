"""recbole-trsr: LLM-based text-rich sequential recommendation as a RecBole plugin."""
from setuptools import find_packages, setup

# Ranges here are what the code needs; requirements.lock holds the exact set the
# project is tested with. The upper bounds are RecBole 1.2.1's, see README "Pinned versions".
install_requires = [
    "recbole==1.2.1",
    "numpy>=1.23,<2",  # RecBole's Config assigns np.float_ etc., removed in numpy 2
    "pandas>=1.5,<3",  # pandas 3 needs numpy 2
    "scipy<1.14",  # last releases built for numpy 1
    "setuptools<81",  # ray<=2.6.3 (pinned by RecBole) imports pkg_resources
    "torch>=2.1",
    "transformers>=5.0",
    "peft>=0.17",
    "accelerate>=1.0",
    "gguf>=0.10",
    "pyyaml>=6",
    "tqdm",
]

setup(
    name="recbole-trsr",
    version="0.1.0",
    description="LLM-based text-rich sequential recommendation (LLM-TRSR, DELRec) for RecBole",
    packages=find_packages(include=["recbole_trsr", "recbole_trsr.*", "dataset_converters"]),
    python_requires=">=3.9,<3.12",
    install_requires=install_requires,
    extras_require={"test": ["pytest>=7"]},
)
