"""bfloat16, the default on GPU, run on CPU: a fine-tuning step under autocast, constrained generation for binning
and VQ, VQ decoding, each next to float32 on the same inputs. Tolerances are stated where they are asserted; the
eval's policy call in bf16 is checked on a trained checkpoint in test_learning_guard.py (a random model's logits
are too flat for its ids to be a fair witness)."""

import numpy as np
import pytest
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.data.collator import ActionChunkCollator
from openvla_vq.model import ImageProcessor, PrismaticVLA
from openvla_vq.model.prompt import prompt_ids
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.model.tiny import write_tiny_checkpoint
from openvla_vq.training.lora import add_lora

BATCH = 8


@pytest.fixture(scope="module")
def vla(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("bf16") / "vla")


def batch_for(vla, tokenizer_name: str) -> tuple[dict, object]:
    model = PrismaticVLA.from_pretrained(vla)
    tokenizer = load_action_tokenizer(tokenizer_name).for_vocab(model.config.base_vocab_size)
    rng = np.random.default_rng(0)
    samples = [{"image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
                "instruction": ["put the bowl in the basket", "close the top drawer of the cabinet"][i % 2],
                "actions": rng.uniform(-1, 1, (tokenizer.chunk_len, 7)).astype(np.float32)} for i in range(BATCH)]
    collator = ActionChunkCollator(load_text_tokenizer(vla), tokenizer, ImageProcessor(model.vision_backbone),
                                   model.config.pad_token_id, 1024)
    return collator(samples), tokenizer


def lora_model(vla, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)  # the same adapter initialisation in both precisions
    return add_lora(PrismaticVLA.from_pretrained(vla, dtype=dtype), 32, 0.0)


def test_a_finetuning_step_under_bf16_autocast_matches_float32(vla):
    """As on GPU: bf16 weights, the adapter in float32 (PEFT upcasts it), autocast around forward and loss."""
    batch, _ = batch_for(vla, "binning")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = lora_model(vla, dtype)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten().float() for n, p in model.named_parameters() if "lora_B" in n])
        adapter_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
        optimizer.step()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            after = model(**inputs).loss.item()
        results[dtype] = (loss.item(), grads, after, adapter_dtypes)
    (loss32, grads32, after32, _), (loss16, grads16, after16, adapter16) = results[torch.float32], results[torch.bfloat16]
    assert adapter16 == {torch.float32}
    assert abs(loss16 - loss32) < 1e-3 * loss32, (loss32, loss16)  # 0.1% of the loss (measured: 6e-6)
    cosine = torch.nn.functional.cosine_similarity(grads32, grads16, dim=0).item()
    assert cosine > 0.999, cosine  # measured: 0.99999
    assert after32 < loss32 and after16 < loss16, (loss32, after32, loss16, after16)


def action_logits(model: PrismaticVLA, batch: dict, tokenizer) -> torch.Tensor:
    """Teacher-forced logits at the T action positions, masked to each position's allowed ids: [B, T, V] float32."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"]).logits.float()
    labels = model.expand_labels(batch["labels"])
    allowed = tokenizer.allowed_id_mask(logits.shape[-1])
    rows = []
    for b in range(labels.shape[0]):
        targets = (labels[b] != -100).nonzero().flatten()[: tokenizer.tokens_per_chunk]  # action ids, then EOS
        rows.append(logits[b, targets - 1].masked_fill(~allowed, float("-inf")))
    return torch.stack(rows)


@pytest.mark.parametrize("tokenizer_name", ["binning", "vq_m"])
def test_constrained_generation_in_bf16_keeps_the_mask_and_the_ids(vla, tokenizer_name):
    batch, tokenizer = batch_for(vla, tokenizer_name)
    logits = {dtype: action_logits(PrismaticVLA.from_pretrained(vla, dtype=dtype).eval(), batch, tokenizer)
              for dtype in (torch.float32, torch.bfloat16)}
    allowed = tokenizer.allowed_id_mask(logits[torch.float32].shape[-1])
    finite = torch.isfinite(logits[torch.bfloat16])
    assert torch.equal(finite, allowed.expand_as(finite))  # masked in bf16 exactly where it is masked in float32
    difference = (logits[torch.bfloat16] - logits[torch.float32])[finite].abs().max().item()
    scale = logits[torch.float32][finite].abs().max().item()
    assert difference < 0.05 * scale, (difference, scale)  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding
    # greedy ids: equal wherever float32's winner leads by more than bf16 can move two logits
    top2 = logits[torch.float32].topk(2, dim=-1).values
    decisive = (top2[..., 0] - top2[..., 1]) > 2 * difference
    assert decisive.float().mean() > 0.5  # most positions (measured: 0.79 binning, 0.72 vq_m), so this is no vacuous check
    ids32, ids16 = logits[torch.float32].argmax(-1), logits[torch.bfloat16].argmax(-1)
    assert torch.equal(ids32[decisive], ids16[decisive])
    # free-running batched generation in bf16: every id allowed at its position, and the sequences decode
    model = PrismaticVLA.from_pretrained(vla, dtype=torch.bfloat16).eval()
    text = load_text_tokenizer(vla)
    prompts = [prompt_ids(text, t) for t in ["put the bowl in the basket", "close the drawer"] * (BATCH // 2)]
    ids = model.generate_constrained(batch["pixel_values"], prompts, allowed)
    assert all(bool(allowed[t, ids[:, t]].all()) for t in range(ids.shape[1]))
    assert torch.isfinite(tokenizer.decode(ids)).all()


def test_vq_decode_under_bf16_autocast_matches_float32():
    tokenizer = load_action_tokenizer("vq_m")
    ids = tokenizer.id_table[torch.arange(tokenizer.tokens_per_chunk), torch.randint(0, 256, (64, tokenizer.tokens_per_chunk))]
    reference = tokenizer.decode(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = tokenizer.decode(ids).float()
    error = (low - reference).abs().max().item()
    assert error < 0.03, error  # normalized actions in [-1, 1]; vq_m's own round-trip L1 is 0.0125
