"""Data sets, the training loop, checkpoints and metrics of the video model."""
