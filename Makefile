# openvla-vq. `make test` and `make demo` set everything up on a fresh machine.
# pip runs with --isolated: PyPI's torch 2.13.0 + torchvision 0.28.0 import together on CPU, while a
# machine-local find-links torch wheel would break torchvision (see ../shared/reference/ENVIRONMENT.md).

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip install --isolated --disable-pip-version-check
STAMP  := $(VENV)/.installed

LIBERO_ASSETS ?= ../shared/libero90-assets/assets
EPISODES      ?= 10
DATA          ?= data/rlds
CHECKPOINT    ?= runs/latest
TASKS         ?= all
TRIALS        ?= 50
PROCS         ?= 1
EVAL_OUT      ?= eval_runs/$(notdir $(CHECKPOINT))

N             ?= 200

.PHONY: synth-maniskill train-tokenizer-m train-tokenizer-fast-m tokenizer-compare tokenizer-report slot-report learn-libero
.PHONY: help setup test demo bench-tokenizers bench-inference bench-data bench-finetune bench-eval libero-data eval-libero90 compare clean

help:
	@echo "make test              set up .venv if needed, run the test suite"
	@echo "make demo              experts -> tiny VLA from scratch (binning, vq_m) -> closed-loop LIBERO success, ~20 min on CPU"
	@echo "make learn-libero      the same at report size: 4 expert tasks x 10 demos, binning / vq_m / vq_m+l -> reports/learn-libero/"
	@echo "make bench-tokenizers  encode+decode throughput, binning vs VQ, batch 1024 on CPU"
	@echo "make bench-inference   actions/s of predict_action, binning vs VQ on one backbone"
	@echo "make bench-data        fine-tuning data samples/s next to a plain tf.data baseline"
	@echo "make bench-finetune    LoRA step samples/s and peak memory (tiny model on CPU)"
	@echo "make libero-data       expert LIBERO-90 demonstrations (libero_90_experts) into \$$(DATA) [EPISODES=10]"
	@echo "make eval-libero90     CHECKPOINT=... [TASKS=all] [TRIALS=50] [PROCS=1] [EVAL_OUT=...]: LIBERO-90, OpenVLA protocol"
	@echo "make compare           RUNS=eval_runs/a,eval_runs/b: success, actions/s, tokens per action side by side"
	@echo "make bench-eval        env steps/s of the harness next to a naive OpenVLA-style loop"
	@echo "make synth-maniskill   N=200: that many successful ManiSkill3 motion-planning trajectories -> RLDS (maniskill_synth, maniskill_heldout)"
	@echo "make train-tokenizer-m train the shipped vq_m on those trajectories (tokenizers/train.py)"
	@echo "make tokenizer-report  [TOKENIZER=vq_m]: held-out quality report next to binning -> reports/<name>/"
	@echo "make train-tokenizer-fast-m  the shipped FAST tokenizer fast_m (DCT + BPE) on ManiSkill3 + LIBERO expert actions"
	@echo "make tokenizer-compare every tokenizer with weights on the same held-out trajectories -> reports/tokenizer-compare/"
	@echo "make slot-report       how often text uses the action-id slots (default vs least_used) -> reports/llama2-slots/"

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -q --upgrade pip setuptools wheel
	$(PIP) -e '.[test,libero]'
	$(PIP) --no-deps hf-libero==0.1.4
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m openvla_vq.demo --data_root_dir $(DATA)/demo --assets_dir $(LIBERO_ASSETS)

# about 1 hour on 2 idle cores (10 demonstrations x 4 tasks, three 5,000-step fine-tunes, six evaluations); every stage is reused on a rerun (runs/learn-libero/stages/)
learn-libero: $(STAMP)
	$(PY) -m openvla_vq.learn_libero --data_root_dir $(DATA)/learn-libero --assets_dir $(LIBERO_ASSETS) --report reports/learn-libero

bench-tokenizers: $(STAMP)
	$(PY) bench/tokenizer_throughput.py

bench-inference: $(STAMP)
	$(PY) bench/inference.py

bench-data: $(STAMP)
	$(PY) bench/data_pipeline.py

bench-finetune: $(STAMP)
	$(PY) bench/finetune.py

eval-libero90: $(STAMP)
	$(VENV)/bin/accelerate launch --num_processes $(PROCS) --num_machines 1 --mixed_precision no --dynamo_backend no \
		$(if $(filter-out 1,$(PROCS)),--multi_gpu,) eval/libero90.py --checkpoint $(CHECKPOINT) --tasks $(TASKS) \
		--trials $(TRIALS) --out_dir $(EVAL_OUT) $(if $(LIBERO_ASSETS),--assets_dir $(LIBERO_ASSETS),)

compare: $(STAMP)
	$(PY) eval/compare.py --runs $(RUNS)

bench-eval: $(STAMP)
	$(PY) bench/eval_harness.py --assets_dir $(LIBERO_ASSETS)

synth-maniskill: $(STAMP)
	N=$(N) DATA=$(DATA) bash tokenizers/synth_maniskill.sh

# the shipped default tokenizer (tokenizers/vq_m/): ManiSkill3 data only (N=4800), 6.5 MB, ~40 min on 2 CPU cores
train-tokenizer-m: $(STAMP)
	$(VENV)/bin/accelerate launch --num_processes 1 --mixed_precision no --dynamo_backend no tokenizers/train.py \
		--mixture m --data_root_dir $(DATA) --name vq_m --steps_per_stage 8000 --save_steps 500 --batch_size 256 \
		--shuffle_buffer_size 20000 --block_out_channels "[32,32,64,64]" --layers_per_block 2 --norm_groups 8 \
		--latent_dim 64 --learning_rate 3e-4 --min_learning_rate 1e-5 --codebook_update ema --ema_decay 0.8

tokenizer-report: $(STAMP)
	$(PY) -m openvla_vq.evaluation.tokenizer_report --tokenizer $(or $(TOKENIZER),vq_m) --data_root_dir $(DATA) \
		--datasets maniskill_synth:val,maniskill_heldout:all,libero_90_experts:all --out reports/$(or $(TOKENIZER),vq_m)

# the shipped FAST tokenizer (tokenizers/fast_m/): ManiSkill3 (make synth-maniskill) + expert LIBERO data (make libero-data)
train-tokenizer-fast-m: $(STAMP)
	$(PY) tokenizers/train_fast.py --mixture ml --data_root_dir $(DATA) --name fast_m

# every registered tokenizer with weights on the same held-out trajectories -> reports/tokenizer-compare/
tokenizer-compare: $(STAMP)
	$(PY) -m openvla_vq.evaluation.tokenizer_compare --data_root_dir $(DATA) --out reports/tokenizer-compare

libero-data: $(STAMP)
	$(PY) -m openvla_vq.sim.make_libero_rlds --out $(DATA) --episodes_per_task $(EPISODES) --workers 2 --assets_dir $(LIBERO_ASSETS)

clean:
	rm -rf $(VENV) .pytest_cache

slot-report: $(STAMP)
	$(PY) -m openvla_vq.evaluation.slot_report --tokenizer ../shared/llama2-tokenizer --out reports/llama2-slots
