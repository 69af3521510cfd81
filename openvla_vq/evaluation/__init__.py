"""LIBERO-90 evaluation with OpenVLA's protocol: sharded, batched, resumable, reported with intervals."""
