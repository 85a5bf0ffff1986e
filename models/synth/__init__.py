"""Synthetic data for accel's two models: odometer meter windows and light-guide plates.

Both generators are pure functions of a seed (NumPy's default_rng + Pillow drawing), so the
training set, the held-out sets and the shipped samples are reproducible from their seeds.
Training uses seeds from TRAIN_SEED, held-out evaluation from EVAL_SEED: different streams.
"""

TRAIN_SEED = 1
EVAL_SEED = 1_000_003
SAMPLE_SEED = 7_000_001
