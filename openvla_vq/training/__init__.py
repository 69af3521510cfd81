"""LoRA fine-tuning of the VLA with any registered action tokenizer (accelerate, exact resume)."""
