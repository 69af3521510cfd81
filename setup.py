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
    "huggingface_hub==2.4.0",  # sharded safetensors checkpoints (save_torch_state_dict)
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
# LIBERO-90 in simulation (headless MuJoCo). hf-libero itself is installed with --no-deps by the Makefile:
# its declared dependencies drag in wandb, hydra, robomimic and two sdists that need cmake.
LIBERO = [
    "robosuite==1.4.0",
    "mujoco==3.3.2",  # the version of the published LIBERO numbers (newer renders darker floors: LIBERO #88, PR #140)
    "bddl==1.0.1",
    "future==1.0.0",  # bddl needs it without declaring it
    "easydict==1.14",
    "cloudpickle==3.1.2",
    "gymnasium==1.4.0",
    "opencv-python==5.0.0.93",
    "imageio-ffmpeg==0.8.1",
    "pyyaml==6.0.3",
]
HF_LIBERO = "hf-libero==0.1.4"
TEST = ["pytest==9.2.0"]

setup(
    name="openvla-vq",
    version="0.1.0",
    description="OpenVLA fine-tuning with pluggable action tokenizers (binning, residual VQ-VAE) and LIBERO-90 evaluation",
    python_requires=">=3.10",
    packages=find_packages(include=["openvla_vq", "openvla_vq.*"]),
    install_requires=CORE + DATA,
    extras_require={"test": TEST, "libero": LIBERO},
)
