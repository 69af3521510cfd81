"""Simulation: LIBERO-90 environments (hf-libero, headless) and scripted demonstrations."""
