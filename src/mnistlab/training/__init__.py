"""Training: the loop, its config, runs and resume, fine-tuning, the report, torchrun.

No imports here: importing a module of this package loads only what that module needs."""
