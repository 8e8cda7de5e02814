"""Evaluation: how well a model follows its prompt and tempo, and how that drifts over a long stream.

A small classifier trained on held-out real renders judges generated audio (style, tempo bucket, mode,
lead instrument); its embeddings give a Fréchet distance to real music; an onset autocorrelation gives tempo.
"""
