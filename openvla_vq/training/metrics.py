"""Training metrics as OpenVLA logs them: action-token accuracy and L1 of decoded actions (normalized space)."""

from __future__ import annotations

import torch

from openvla_vq.action_tokenizers import ActionTokenizer, DecodingConstraint
from openvla_vq.model.prismatic import IGNORE_INDEX


@torch.no_grad()
def action_metrics(logits: torch.Tensor, full_labels: torch.Tensor, eos_id: int, tokenizer: ActionTokenizer,
                   constraint: DecodingConstraint, actions: torch.Tensor) -> dict[str, float]:
    """logits [B, L, V] and labels [B, L] over the multimodal sequence; actions: the normalized targets [B, K, D].

    accuracy: plain argmax equals the label, over action positions (EOS excluded), as OpenVLA.
    l1: mean |decode(constrained argmax) - target|, the argmax at each action position restricted to what the
    tokenizer's automaton allows after the gold prefix (fixed length: that position's ids). A variable-length
    tokenizer's teacher-forced picks need not form a sequence that decodes: l1 covers the rows that do, and
    `decodable` says how many did.
    """
    gold = full_labels[:, 1:]
    is_action = (gold != IGNORE_INDEX) & (gold != eos_id)
    step_logits = logits[:, :-1]
    accuracy = (step_logits.argmax(-1) == gold)[is_action].float().mean()
    lengths = is_action.sum(1)
    b, longest = gold.shape[0], int(lengths.max())
    # each row's action positions, in order, left-aligned: [B, longest, V] and their gold ids [B, longest]
    order = torch.argsort((~is_action).int(), dim=1, stable=True)[:, :longest]
    per_position = step_logits.gather(1, order[..., None].expand(-1, -1, step_logits.shape[-1])).float()
    inside = torch.arange(longest, device=gold.device)[None] < lengths[:, None]
    gold_ids = gold.gather(1, order).where(inside, tokenizer.end_id if tokenizer.end_id is not None else 0)
    state, picks = constraint.start(b, per_position.device), []
    for t in range(longest):
        picks.append(per_position[:, t].masked_fill(~constraint.allowed(state), float("-inf")).argmax(-1))
        state = constraint.advance(state, gold_ids[:, t])
    predicted = torch.stack(picks, dim=1).cpu()
    if tokenizer.end_id is not None:  # past a row's own length: padding, as encode() pads
        predicted[~inside.cpu()] = tokenizer.end_id
    ok = tokenizer.decodable(predicted)
    l1 = (tokenizer.decode(predicted[ok]) - actions.cpu().float()[ok]).abs().mean() if bool(ok.any()) else torch.tensor(float("nan"))
    return {"action_accuracy": accuracy.item(), "l1_loss": l1.item(), "decodable": ok.float().mean().item()}
