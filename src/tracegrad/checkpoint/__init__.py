"""Checkpointing: trading recomputation for memory when reversing long chains of steps."""
from .checkpoint import CheckpointError, CheckpointStats, Stepper, checkpoint, loop, step

__all__ = ["checkpoint", "step", "loop", "Stepper", "CheckpointStats", "CheckpointError"]
