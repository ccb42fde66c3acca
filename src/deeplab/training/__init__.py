"""Training machinery: optimiser and schedule, samplers, distributed helpers, resumable checkpoints."""
