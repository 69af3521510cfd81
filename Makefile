# openvla-vq. `make test` and `make demo` set everything up on a fresh machine.
# pip runs with --isolated: PyPI's torch 2.13.0 + torchvision 0.28.0 import together on CPU, while a
# machine-local find-links torch wheel would break torchvision (see ../shared/reference/ENVIRONMENT.md).

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip install --isolated --disable-pip-version-check
STAMP  := $(VENV)/.installed

LIBERO_ASSETS ?= ../shared/libero-test-assets/assets
EPISODES      ?= 2
DATA          ?= data/rlds
CHECKPOINT    ?= runs/latest
TASKS         ?= all
TRIALS        ?= 50
PROCS         ?= 1
EVAL_OUT      ?= eval_runs/$(notdir $(CHECKPOINT))

.PHONY: help setup test demo bench-tokenizers bench-inference bench-data bench-finetune bench-eval libero-data eval-libero90 compare clean

help:
	@echo "make test              set up .venv if needed, run the test suite"
	@echo "make demo              (not available yet: arrives with the end-to-end demo issue)"
	@echo "make bench-tokenizers  encode+decode throughput, binning vs VQ, batch 1024 on CPU"
	@echo "make bench-inference   actions/s of predict_action, binning vs VQ on one backbone"
	@echo "make bench-data        fine-tuning data samples/s next to a plain tf.data baseline"
	@echo "make bench-finetune    LoRA step samples/s and peak memory (tiny model on CPU)"
	@echo "make libero-data       render the small scripted LIBERO-format RLDS dataset into \$$(DATA) [EPISODES=2]"
	@echo "make eval-libero90     CHECKPOINT=... [TASKS=all] [TRIALS=50] [PROCS=1] [EVAL_OUT=...]: LIBERO-90, OpenVLA protocol"
	@echo "make compare           RUNS=eval_runs/a,eval_runs/b: success, actions/s, tokens per action side by side"
	@echo "make bench-eval        env steps/s of the harness next to a naive OpenVLA-style loop"

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -q --upgrade pip setuptools wheel
	$(PIP) -e '.[test,libero]'
	$(PIP) --no-deps hf-libero==0.1.4
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo:
	@echo "make demo is not available yet: the end-to-end demo (tokenizer -> fine-tune -> LIBERO rollout) arrives with a later issue."
	@echo "Today: 'make test' and 'make bench-tokenizers'."
	@exit 2

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

libero-data: $(STAMP)
	$(PY) -m openvla_vq.sim.make_libero_rlds --out $(DATA) --episodes_per_task $(EPISODES) --assets_dir $(LIBERO_ASSETS)

clean:
	rm -rf $(VENV) .pytest_cache
