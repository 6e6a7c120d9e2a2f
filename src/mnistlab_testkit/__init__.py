"""Helpers shared by mnistlab's tests and benchmarks, in one place: fake MNIST files and running the
CLI (fakes), synthetic handwriting, datasets of one's own in each layout (owndatasets), hard inputs,
the browser driver, the image fuzzer and the saliency deletion test. Part of the source tree,
importable from a development install (scripts/setup.sh), and left out of the wheel: users of
mnistlab never need it."""
