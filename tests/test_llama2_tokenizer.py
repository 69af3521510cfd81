"""The real Llama-2 text tokenizer (../shared/llama2-tokenizer, OpenVLA's <PAD> = 32000) where ids matter: prompts,
action-id ranges against text, the least-used slot policy on its BPE tokenizer.json, and a tiny VLA that uses it."""

import os

import numpy as np
import pytest
import torch

from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig, load_action_tokenizer
from openvla_vq.evaluation.slot_report import libero_instructions
from openvla_vq.action_tokenizers.slots import least_used_ids, top_of_vocab_ids
from openvla_vq.model.prompt import prompt_ids, training_example
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.model.tiny import write_tiny_checkpoint
from openvla_vq.policy import VLAPolicy
from openvla_reference import LLAMA2_TOKENIZER

pytestmark = pytest.mark.skipif(not LLAMA2_TOKENIZER.is_dir() and not os.environ.get("CI"),
                                reason=f"Llama-2 tokenizer pack missing: {LLAMA2_TOKENIZER} (clone with ../shared beside the repo)")
VQ_RANGE = (30976, 31999)  # VQ-VLA: 4 layers x 256 codes at the top of Llama-2's 32000 ids
TINY_VQ = dict(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8)


@pytest.fixture(scope="module")
def llama():
    return load_text_tokenizer(LLAMA2_TOKENIZER)


def test_openvla_prompt_ids(llama):
    # OpenVLA's prompt for "turn on the stove", as its processor + predict_action build it (29871 appended)
    expected = [1, 512, 29901, 1724, 3158, 881, 278, 19964, 2125, 304, 2507, 373, 278, 380, 994, 29973, 13, 3744, 29901, 29871]
    assert prompt_ids(llama, "Turn on the stove") == expected
    assert len(llama) == 32001 and llama.pad_token_id == 32000 and llama.vocab_size == 32000


def test_no_libero_instruction_tokenizes_into_action_ids(llama):
    instructions = libero_instructions()
    assert len(instructions) >= 100  # all LIBERO suites hf-libero ships (LIBERO-90 alone has 90 tasks)
    low, high = VQ_RANGE  # covers binning's 31744-31999 too
    for text in instructions:
        ids = np.asarray(prompt_ids(llama, text))
        assert not ((ids >= low) & (ids <= high)).any(), text


def test_action_ids_survive_text_round_trip(llama):
    """Each of the 1024 VQ/binning ids, decoded alone, re-encodes to itself after "Out: " (OpenVLA tokenized action
    strings in training), so the ids we feed straight to the model are what its text would have produced."""
    for i in range(VQ_RANGE[0], VQ_RANGE[1] + 1):
        piece = llama.decode([i])
        assert llama("Out: " + piece + "</s>").input_ids[-3:] == [29871, i, 2], i


def test_least_used_policy_on_bpe_tokenizer_json(llama):
    path = LLAMA2_TOKENIZER / "tokenizer.json"
    # without counts: SentencePiece score order, kept in a converted vocabulary's ids -> the top 1024 normal ids
    assert torch.equal(least_used_ids(path, 4, 256), top_of_vocab_ids(32000, 4, 256))
    # with measured counts: ids that text uses are avoided, specials and byte pieces never taken
    counts = np.zeros(32001, np.int64)
    counts[31000:32000] = 5  # pretend the top of the vocabulary is heavily used
    table = least_used_ids(LLAMA2_TOKENIZER, 4, 256, counts=counts)
    chosen = set(table.flatten().tolist())
    assert len(chosen) == 1024 and not chosen & set(range(31000, 32000))
    assert not chosen & {0, 1, 2, 32000} and not chosen & set(range(3, 259))  # specials, <PAD>, <0x00>..<0xFF>
    assert max(chosen) == 30999 and table[0, 0] == 30999  # rarest first, ties towards the higher id
    assert all(llama.convert_ids_to_tokens(i) not in llama.all_special_tokens for i in chosen)


def test_tiny_vla_with_llama2_tokenizer_trains_and_predicts_in_range(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "tiny-llama2", base_vocab_size=32000, text_tokenizer=LLAMA2_TOKENIZER)
    torch.manual_seed(0)
    vq = VQActionTokenizer(VQConfig(**TINY_VQ))  # default vocab_size 32000: VQ-VLA's ranges
    policy = VLAPolicy.from_pretrained(folder, vq)
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    ids = policy.predict_ids([image, image[::-1]], ["put the bowl on the plate", "turn on the stove"])
    for layer in range(4):
        low = VQ_RANGE[1] - 256 * (layer + 1) + 1
        assert ((ids[:, layer] >= low) & (ids[:, layer] <= low + 255)).all()
    binning = load_action_tokenizer("binning")
    input_ids, labels = training_example(policy.text_tokenizer, "turn on the stove", binning.encode(torch.zeros(1, 1, 7))[0].tolist())
    assert input_ids[:20].tolist() == prompt_ids(policy.text_tokenizer, "turn on the stove")
    pixels = policy.image_processor([image])
    loss = policy.model(input_ids[None], torch.ones_like(input_ids)[None], pixels, labels=labels[None]).loss
    loss.backward()
    assert torch.isfinite(loss) and policy.model.language_model.lm_head.weight.grad[31744:32000].abs().sum() > 0
