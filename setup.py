"""openvla-vq: fine-tune OpenVLA with a pluggable action tokenizer and evaluate on LIBERO-90.

Versions are pinned to the stack measured together in ../shared/reference/ENVIRONMENT.md.
torch/torchvision come from PyPI's default (CUDA) build: it runs on CPU, and it is the only
torchvision 0.28.0 that imports next to torch 2.13.0 (install with `pip install --isolated`).
"""

from setuptools import find_packages, setup

CORE = [
    "torch==2.13.0",
    "torchvision==0.28.0",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "peft==0.21.2",
    "accelerate==1.15.0",
    "timm==1.0.31",
    "draccus==0.11.6",
    "safetensors==0.8.0",
    "sentencepiece==0.2.3",
    "numpy==2.4.6",
    "tqdm==4.70.1",
    "tensorboard==2.21.0",
    "matplotlib==3.11.2",
    "imageio==2.38.1",
]
DATA = [
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "rlds==0.1.8",
    "protobuf==7.36.2",
    "importlib_resources==7.1.0",  # tensorflow-datasets imports it without declaring it
]
TEST = ["pytest==9.2.0"]

setup(
    name="openvla-vq",
    version="0.1.0",
    description="OpenVLA fine-tuning with pluggable action tokenizers (binning, residual VQ-VAE) and LIBERO-90 evaluation",
    python_requires=">=3.10",
    packages=find_packages(include=["openvla_vq", "openvla_vq.*"]),
    install_requires=CORE + DATA,
    extras_require={"test": TEST},
)
