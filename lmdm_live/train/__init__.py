"""Training: LMDM stage 1 (block-AR fine-tuning with context and CFG dropout), with more to come."""
