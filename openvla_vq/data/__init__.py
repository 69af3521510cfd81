"""Data: RLDS readers, OpenVLA normalization, chunking, and the fine-tuning dataset."""
