"""ACT's temporal ensembling (Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with Low-Cost
Hardware", section 3.3) for chunked action tokenizers.

The policy is queried at every step. Each query returns a chunk of K actions, the first for this step, so at step
t the chunks queried at t-K+1 .. t each predict an action for t. The executed action is their weighted mean, with
ACT's weights w_i = exp(-m * i), i = 0 for the oldest prediction (ACT: m = 0.01; larger m trusts new observations
more). One bad query then moves an action by about 1/K of its error instead of setting it, and consecutive actions
come from overlapping predictions, so they change smoothly.

The gripper is averaged in the model's [0, 1] space like the arm; OpenVLA's post-processing (2g - 1, sign, invert)
then makes it the weighted majority of the predictions.
"""

from __future__ import annotations

from collections import deque

import numpy as np

ACT_WEIGHT_DECAY = 0.01  # ACT's m


class TemporalEnsemble:
    """One episode's ensemble: `step(chunk)` with the chunk [K, D] queried at this step -> the action [D] to execute."""

    def __init__(self, chunk_len: int, weight_decay: float = ACT_WEIGHT_DECAY) -> None:
        self.weight_decay = weight_decay
        self.chunks: deque[np.ndarray] = deque(maxlen=chunk_len)  # oldest first; older ones no longer reach this step

    def step(self, chunk: np.ndarray) -> np.ndarray:
        self.chunks.append(np.asarray(chunk, np.float64))
        newest = len(self.chunks) - 1
        # the chunk queried `age` steps ago predicts this step in its row `age`
        predictions = np.stack([c[newest - i] for i, c in enumerate(self.chunks)])  # oldest first
        weights = np.exp(-self.weight_decay * np.arange(len(predictions)))
        return (weights / weights.sum()) @ predictions
