"""Checkpointing: trading recomputation for memory when reversing long chains of steps."""
