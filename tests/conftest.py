import os

import pytest
import torch

from vqvla_reference import CHECKPOINT_REF

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def vqvla_reference_dir():
    """../shared/reference/vqvla-checkpoint; required in CI, skipped with a reason elsewhere."""
    if not CHECKPOINT_REF.is_dir():
        msg = f"VQ-VLA reference files missing: {CHECKPOINT_REF} (clone with ../shared beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CHECKPOINT_REF
