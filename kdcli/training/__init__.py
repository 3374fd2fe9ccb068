"""The engine: a run from configuration to student file — the run's parts, the step, the schedule, pre-stages, the
per-epoch validation, and the run's end."""
