"""Does the fine-tuned policy still answer where the waypoints are? (ad hoc; output: answers_after_finetune.txt)

    python reports/pick-place-probes/pretrained_vla_wrist_camera/answers_after_finetune.py runs/pp-vla

Asks the pretraining's question (training/pretrain_vla.py) on the held-out scene frames of the run's pretraining,
teacher-forced, of four models: the random-init VLA, the pretrained VLA, the fine-tuned policy (base + LoRA,
merged as the evaluation merges it), and that policy with the pretrained output layer put back (the fine-tune
trains lm_head in full on the same bin ids the answer uses). The fine-tune only ever saw the action prompt.
"""

import json
import sys
from pathlib import Path

from openvla_vq.model.prismatic import PrismaticVLA
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.model.vision import ImageProcessor
from openvla_vq.training.merge import merged_model
from openvla_vq.training.pretrain_vision import HELD_OUT_EPISODES, load_frames
from openvla_vq.training.pretrain_vla import Answers, held_out_errors

run = Path(sys.argv[1])
checkpoint = run / "runs" / "binning" / "checkpoints" / "step_00002500"
models = {"random init": PrismaticVLA.from_pretrained(run / "vla"),
          "pretrained": PrismaticVLA.from_pretrained(run / "vla-pretrained"),
          "fine-tuned (binning)": merged_model(checkpoint, json.loads((checkpoint / "run_config.json").read_text()))}
restored = merged_model(checkpoint, json.loads((checkpoint / "run_config.json").read_text()))
restored.language_model.lm_head.load_state_dict(models["pretrained"].language_model.lm_head.state_dict())
models["fine-tuned, pretrained output layer put back"] = restored
frames = load_frames(run / "scene_frames", 2, HELD_OUT_EPISODES)
for name, model in models.items():
    model.eval()
    answers = Answers(frames, load_text_tokenizer(run / "vla"), ImageProcessor(model.vision_backbone),
                      model.config.base_vocab_size, model.config.pad_token_id, model.config.llm_max_length)
    print(name, json.dumps(held_out_errors(model, answers, 32)), flush=True)
