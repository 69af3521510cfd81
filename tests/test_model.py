"""The native Prismatic VLA: OpenVLA checkpoint layout, 7B parameter count, prompts/labels, constrained decoding."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from openvla_vq.action_tokenizers import BinningActionTokenizer, BinningConfig, VQActionTokenizer, VQConfig
from openvla_vq.model import IGNORE_INDEX, ImageProcessor, PrismaticVLA, VLAConfig, tiny_config
from openvla_vq.model.prompt import collate, prompt_ids, training_example
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.model.tiny import write_tiny_checkpoint
from openvla_vq.policy import VLAPolicy

VOCAB = 1600


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-openvla", seed=0, base_vocab_size=VOCAB)


@pytest.fixture(scope="module")
def text_tokenizer(tiny_folder):
    return load_text_tokenizer(tiny_folder)


@pytest.fixture(scope="module")
def tokenizers():
    vq = VQActionTokenizer(VQConfig(block_out_channels=[16, 16, 16, 16], norm_groups=4, layers_per_block=1, latent_dim=8,
                                    vocab_size=VOCAB))
    return {"binning": BinningActionTokenizer(BinningConfig(vocab_size=VOCAB)), "vq": vq}


def openvla_key_names(depth_dino: int, depth_siglip: int, layers: int) -> set[str]:
    """A sample of the state-dict names an OpenVLA checkpoint uses (OPENVLA_VQVLA.md §1.5)."""
    names = {"vision_backbone.featurizer.cls_token", "vision_backbone.featurizer.reg_token", "vision_backbone.featurizer.pos_embed",
             "vision_backbone.featurizer.norm.weight", "vision_backbone.fused_featurizer.attn_pool.latent",
             "vision_backbone.fused_featurizer.attn_pool.mlp.fc2.weight", "projector.fc1.weight", "projector.fc2.bias",
             "projector.fc3.weight", "language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
             "language_model.model.norm.weight"}
    for b in range(depth_dino):
        names |= {f"vision_backbone.featurizer.blocks.{b}.ls1.scale_factor", f"vision_backbone.featurizer.blocks.{b}.ls2.scale_factor",
                  f"vision_backbone.featurizer.blocks.{b}.attn.qkv.weight"}
    for b in range(depth_siglip):
        names.add(f"vision_backbone.fused_featurizer.blocks.{b}.mlp.fc1.weight")
    for l in range(layers):
        names |= {f"language_model.model.layers.{l}.self_attn.q_proj.weight", f"language_model.model.layers.{l}.mlp.gate_proj.weight"}
    return names


def test_openvla_layout_checkpoint_written_by_hand_loads_strictly(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(VOCAB)
    reference = PrismaticVLA(cfg).state_dict()
    assert openvla_key_names(3, 3, 2) <= set(reference), "model must use OpenVLA's state-dict names"
    assert not any(k.endswith(".gamma") for k in reference), "LayerScale must be named scale_factor"
    # a checkpoint folder as OpenVLA ships it: extra config keys, sharded safetensors + index, random tensors
    folder = tmp_path / "openvla-layout"
    folder.mkdir()
    config = {**cfg.to_dict(), "architectures": ["OpenVLAForActionPrediction"],
              "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig"}, "transformers_version": "4.40.1"}
    (folder / "config.json").write_text(json.dumps(config))
    keys = sorted(reference)
    tensors = {k: torch.randn(reference[k].shape) for k in keys}
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: tensors[k] for k in part}, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: n for n, p in halves.items() for k in p}}))
    model = PrismaticVLA.from_pretrained(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[k]), k
    # round trip: save, load, identical logits
    batch = {"input_ids": torch.tensor([[1, 50, 60, 70, 80]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "pixel_values": torch.randn(1, 6, 224, 224)}
    model.eval()
    model.save_pretrained(tmp_path / "again", max_shard_bytes=200_000)  # forces several shards
    again = PrismaticVLA.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, again(**batch).logits)
    # one key missing -> clear error
    save_file({k: tensors[k] for k in keys if k != "projector.fc2.bias"}, str(tmp_path / "broken.safetensors"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps(config))
    (tmp_path / "broken.safetensors").rename(tmp_path / "broken" / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 missing keys \['projector.fc2.bias'\], 0 unexpected"):
        PrismaticVLA.from_pretrained(tmp_path / "broken")


def vit_params(d: int, depth: int, hidden: int, patches: int, prefix: int, layer_scale: bool, map_pool: bool) -> int:
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    block += 2 * d if layer_scale else 0
    total = 3 * 14 * 14 * d + d + patches * d + prefix * d + depth * block + 2 * d
    if map_pool:  # attention-pool head: latent, q, kv, proj, norm, mlp
        total += d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    return total


def test_7b_shaped_model_on_meta_matches_independent_parameter_count():
    with torch.device("meta"):
        model = PrismaticVLA(VLAConfig())
    dino = vit_params(1024, 24, 4096, 256, prefix=1 + 4, layer_scale=True, map_pool=False)  # ViT-L/14, cls + 4 registers
    siglip = vit_params(1152, 27, 4304, 256, prefix=0, layer_scale=False, map_pool=True)  # So400m/14, mlp 1152 * 3.7362
    v, h = 1024 + 1152, 4096
    projector = (v * 4 * v + 4 * v) + (4 * v * h + h) + (h * h + h)
    llama = 32064 * h * 2 + 32 * (4 * h * h + 3 * h * 11008 + 2 * h) + h
    expected = dino + siglip + projector + llama
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.num_patches == 256 and model.vision_backbone.embed_dim == 2176
    print(f"OpenVLA-7B parameters: {expected:,}")


def test_prompt_and_labels_match_openvla(text_tokenizer, tokenizers):
    prompt = prompt_ids(text_tokenizer, "Pick UP the Bowl")
    exact = text_tokenizer("In: What action should the robot take to pick up the bowl?\nOut:").input_ids
    assert prompt[: len(exact)] == exact and len(prompt) in (len(exact), len(exact) + 1)
    assert "<0x0A>" in text_tokenizer.convert_ids_to_tokens(prompt)  # the newline survives as a byte piece
    assert prompt[0] == text_tokenizer.bos_token_id and prompt[-1] == text_tokenizer.convert_tokens_to_ids("▁")
    for tok in tokenizers.values():
        actions = torch.rand(1, tok.chunk_len, 7) * 2 - 1
        ids = tok.encode(actions)[0]
        input_ids, labels = training_example(text_tokenizer, "pick up the bowl", ids.tolist())
        supervised = labels != IGNORE_INDEX
        assert int(supervised.sum()) == tok.tokens_per_chunk + 1
        assert labels[supervised].tolist() == ids.tolist() + [text_tokenizer.eos_token_id]  # ids straight from the tokenizer
        assert input_ids[: len(prompt)].tolist() == prompt and not supervised[: len(prompt)].any()


def test_collator_pads_right(text_tokenizer):
    a = training_example(text_tokenizer, "a", [1500] * 7)
    b = training_example(text_tokenizer, "open the top drawer of the cabinet", [1500] * 7)
    batch = collate([{"input_ids": x, "labels": y, "pixel_values": torch.zeros(6, 224, 224)} for x, y in (a, b)],
                    pad_token_id=VOCAB, max_length=1024)
    n = len(a[0])
    assert batch["input_ids"].shape == (2, len(b[0])) and (batch["input_ids"][0, n:] == VOCAB).all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and batch["attention_mask"][0].sum() == n


def naive_greedy(model, pixel_values, prompt, allowed):
    """Reference: full recompute at every step, batch 1, no cache."""
    ids = list(prompt)
    for t in range(allowed.shape[0]):
        x = torch.tensor([ids])
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=pixel_values[None]).logits[0, -1]
        ids.append(int(logits.masked_fill(~allowed[t], float("-inf")).argmax()))
    return ids[len(prompt):]


def test_batched_cached_decoding_equals_naive_decoding(tiny_folder, text_tokenizer, tokenizers):
    model = PrismaticVLA.from_pretrained(tiny_folder).eval()
    pixels = torch.randn(3, 6, 224, 224)
    prompts = [prompt_ids(text_tokenizer, t) for t in ["a", "pick up the black bowl on the left", "open it"]]
    for tok in tokenizers.values():
        allowed = tok.allowed_id_mask(model.config.text_config["vocab_size"])
        fast = model.generate_constrained(pixels, prompts, allowed)
        with torch.no_grad():
            for i, p in enumerate(prompts):
                assert fast[i].tolist() == naive_greedy(model, pixels[i], p, allowed)


def test_1000_constrained_decodes_never_yield_an_invalid_id(tiny_folder, text_tokenizer, tokenizers):
    model = PrismaticVLA.from_pretrained(tiny_folder).eval()
    torch.manual_seed(1)
    prompts = [prompt_ids(text_tokenizer, "put the bowl on the plate")] * 250
    for name, tok in tokenizers.items():
        allowed = tok.allowed_id_mask(model.config.text_config["vocab_size"])
        for _ in range(4):
            ids = model.generate_constrained(torch.randn(250, 6, 224, 224) * 3, prompts, allowed)
            for p in range(tok.tokens_per_chunk):
                assert set(ids[:, p].tolist()) <= set(tok.allowed_ids(p).tolist()), name
            assert tok.decode(ids).shape == (250, tok.chunk_len, 7)
    # the mask is what guarantees it: the same random model, unconstrained, emits non-action ids
    free = model.generate_constrained(torch.randn(8, 6, 224, 224), prompts[:8], torch.ones(1, allowed.shape[1], dtype=torch.bool))
    assert not set(free[:, 0].tolist()) <= set(tokenizers["binning"].allowed_ids(0).tolist())


def test_predict_action_unnormalizes_with_checkpoint_statistics(tiny_folder, text_tokenizer, tokenizers, tmp_path):
    stats = {"libero_90_no_noops": {"action": {"q01": [-0.5, -0.4, -0.3, -0.2, -0.1, -0.05, 0.0],
                                               "q99": [0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 1.0],
                                               "mask": [True] * 6 + [False]}}}
    (tiny_folder / "dataset_statistics.json").write_text(json.dumps(stats))
    images = [np.random.default_rng(i).integers(0, 255, (256, 256, 3), dtype=np.uint8) for i in range(3)]
    texts = ["pick up the bowl", "close the drawer", "turn on the stove"]
    for tok in tokenizers.values():
        policy = VLAPolicy.from_pretrained(tiny_folder, tok)
        actions = policy.predict_action(images, texts)
        assert actions.shape == (3, tok.chunk_len, 7) and policy.last_latency_s > 0
        norm = tok.decode(policy.predict_ids(images, texts)).numpy()
        s = stats["libero_90_no_noops"]["action"]
        q01, q99 = np.array(s["q01"]), np.array(s["q99"])
        expect = np.concatenate([0.5 * (norm[..., :6] + 1) * (q99[:6] - q01[:6]) + q01[:6], norm[..., 6:]], axis=-1)
        np.testing.assert_allclose(actions, expect, rtol=1e-6, atol=1e-6)
    (tiny_folder / "dataset_statistics.json").unlink()


def openvla_normalized(img: np.ndarray, stats: list) -> np.ndarray:
    """Reference: OpenVLA's processor in numpy (bicubic to 224 px, then each tower's mean/std), [6, 224, 224]."""
    resized = np.asarray(Image.fromarray(img).resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255
    return np.concatenate([(resized - np.array(mean)) / np.array(std) for mean, std in stats], axis=2).transpose(2, 0, 1)


def test_image_processor_matches_openvla_normalization():
    img = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    stats = [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)]
    proc = ImageProcessor(stats=stats)
    np.testing.assert_allclose(proc([img])[0].numpy(), openvla_normalized(img, stats), atol=1e-5)
    tiny = PrismaticVLA(tiny_config(VOCAB))
    assert torch.allclose(ImageProcessor(tiny.vision_backbone).mean.flatten(), proc.mean.flatten())
    small = PrismaticVLA(tiny_config(VOCAB, image_sizes=[112, 112]))  # training and the policy read the model's size
    assert ImageProcessor(small.vision_backbone)([img]).shape == (1, 6, 112, 112)


def test_action_ids_follow_the_models_vocabulary(tiny_folder, text_tokenizer):
    """OpenVLA's bins and VQ-VLA's codes count from the end of the LLM vocabulary; explicit slots cannot move."""
    from openvla_vq.action_tokenizers import ActionTokenizerError

    model = PrismaticVLA.from_pretrained(tiny_folder)
    policy = VLAPolicy(model, text_tokenizer, BinningActionTokenizer())  # registered with Llama-2's 32000
    assert policy.action_tokenizer.allowed_ids(0).tolist() == list(range(VOCAB - 256, VOCAB))
    vq = VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8))
    moved = VLAPolicy(model, text_tokenizer, vq).action_tokenizer
    assert moved.allowed_ids(3).tolist() == list(range(VOCAB - 1024, VOCAB - 768)) and moved.model is vq.model
    slots = [list(range(10 + 256 * i, 266 + 256 * i)) for i in range(4)]
    explicit = VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8,
                                          slot_policy="least_used", slot_ids=slots))
    with pytest.raises(ActionTokenizerError, match="cannot move"):
        VLAPolicy(model, text_tokenizer, explicit)
    big = [list(range(1000 + 256 * i, 1256 + 256 * i)) for i in range(4)]  # up to 2023 on a 1600-token vocabulary
    with pytest.raises(ActionTokenizerError, match="rebuild it with vocab_size=1600"):
        from openvla_vq.model.text_tokenizer import check_tokenizer_fits_model
        check_tokenizer_fits_model(VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1,
                                                               latent_dim=8, slot_policy="least_used", slot_ids=big)),
                                   model.config, text_tokenizer.all_special_ids)


def test_two_image_model_reads_each_camera_through_the_same_towers(tmp_path):
    """OpenVLA-OFT's second image: the wrist image's patches follow the third-person image's, each exactly what a
    one-image model with the same weights computes for it (the second image adds no parameter); the wrist image
    changes the prediction; a one-image batch is refused with the reason."""
    folder = write_tiny_checkpoint(tmp_path / "two", base_vocab_size=VOCAB, num_images=2)
    two = PrismaticVLA.from_pretrained(folder).eval()
    assert two.config.num_images_in_input == 2, "the setting survives config.json"
    one = PrismaticVLA(tiny_config(VOCAB)).eval()
    one.load_state_dict(two.state_dict())
    third, wrist = torch.randn(2, 6, 224, 224), torch.randn(2, 6, 224, 224)
    ids, mask = torch.tensor([[1, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        both = two.project_patches(torch.cat([third, wrist], dim=1))
        torch.testing.assert_close(both, torch.cat([one.project_patches(third), one.project_patches(wrist)], dim=1))
        logits = [two(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([third[:1], w], dim=1)).logits[0, -1]
                  for w in (wrist[:1], wrist[1:])]
    assert both.shape[1] == 2 * one.num_patches == two.num_patches
    assert not torch.allclose(*logits), "the wrist image reaches the action prediction"
    with pytest.raises(ValueError, match="num_images_in_input"):
        two.project_patches(third)


def test_image_processor_stacks_a_samples_cameras_in_order():
    stats = [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.25,) * 3)]
    processor = ImageProcessor(stats=stats)
    a, b, c = (np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
               for i, size in enumerate((224, 256, 224)))
    stacked = processor([(a, b), (c, a)])
    assert stacked.shape == (2, 12, 224, 224)
    for got, image in ((stacked[0, :6], a), (stacked[0, 6:], b), (stacked[1, :6], c), (stacked[1, 6:], a)):
        np.testing.assert_allclose(got.numpy(), openvla_normalized(image, stats), atol=1e-5)


def test_training_loss_on_the_supervised_tail_equals_the_full_loss(text_tokenizer):
    """Training projects only the positions the loss reads onto the vocabulary (`supervised_tail`); the loss and every
    gradient equal those of the full forward, where all 256 patch positions get logits too."""
    torch.manual_seed(0)
    model = PrismaticVLA(tiny_config(VOCAB))
    examples = [training_example(text_tokenizer, text, [VOCAB - 1 - i for i in range(7)])
                for text in ("a", "open the top drawer of the cabinet and the microwave")]  # prompts of unequal length
    batch = collate([{"input_ids": x, "labels": y} for x, y in examples], pad_token_id=VOCAB, max_length=1024)
    pixels = torch.randn(2, 6, 224, 224)
    keep = model.supervised_tail(batch["labels"])
    first = int((batch["labels"] != IGNORE_INDEX).any(0).nonzero()[0])  # the batch's first supervised text position
    assert keep == batch["labels"].shape[1] - first + 1 and keep < model.num_patches
    results = []
    for logits_to_keep in (0, keep):
        model.zero_grad()
        out = model(**batch, pixel_values=pixels, logits_to_keep=logits_to_keep)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (full, full_grads), (tail, tail_grads) = results
    assert tail.logits.shape[1] == keep and full.logits.shape[1] == model.num_patches + batch["labels"].shape[1]
    torch.testing.assert_close(tail.loss, full.loss)
    torch.testing.assert_close(tail.logits, full.logits[:, -keep:])
    assert full_grads.keys() == tail_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(tail_grads[name], grad, msg=name)
