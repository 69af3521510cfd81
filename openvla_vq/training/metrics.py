"""Training metrics as OpenVLA logs them: action-token accuracy and L1 of decoded actions (normalized space)."""

from __future__ import annotations

import torch

from openvla_vq.action_tokenizers import ActionTokenizer
from openvla_vq.model.prismatic import IGNORE_INDEX


@torch.no_grad()
def action_metrics(logits: torch.Tensor, full_labels: torch.Tensor, eos_id: int, tokenizer: ActionTokenizer,
                   allowed: torch.Tensor, actions: torch.Tensor) -> dict[str, float]:
    """logits [B, L, V] and labels [B, L] over the multimodal sequence; actions: the normalized targets [B, K, D].

    accuracy: plain argmax equals the label, over action positions (EOS excluded), as OpenVLA.
    l1: mean |decode(constrained argmax) - target| (argmax restricted to each position's allowed ids).
    """
    gold = full_labels[:, 1:]
    is_action = (gold != IGNORE_INDEX) & (gold != eos_id)
    step_logits = logits[:, :-1]
    accuracy = (step_logits.argmax(-1) == gold)[is_action].float().mean()
    b, t = gold.shape[0], tokenizer.tokens_per_chunk
    per_position = step_logits[is_action].view(b, t, -1).float()  # each row holds exactly T action positions
    predicted = per_position.masked_fill(~allowed.to(per_position.device)[None], float("-inf")).argmax(-1)
    l1 = (tokenizer.decode(predicted.cpu()) - actions.cpu().float()).abs().mean()
    return {"action_accuracy": accuracy.item(), "l1_loss": l1.item()}
