"""The engine: a run from configuration to student file — loading, the step, evaluation, pre-stages, export."""
