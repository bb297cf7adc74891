"""Training: physics-simulated pretraining, fine-tuning, evaluation and export.

Imports seqinv, never the reverse.
"""
