"""Helpers shared by mnistlab's tests and benchmarks: the browser driver, the image fuzzer and the
saliency deletion test. Part of the source tree, importable from a development install
(scripts/setup.sh), and left out of the wheel: users of mnistlab never need it."""
