"""Simulation: LIBERO-90 environments (hf-libero, headless), expert demonstrations, the evaluation protocol."""
