"""Data: MNIST and its family, a user's own folders, preprocessing, augmentation, corruptions.

No imports here: importing a module of this package loads only what that module needs."""
