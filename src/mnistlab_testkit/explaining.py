"""The deletion test of a saliency map, for the tests and benchmarks/explain.py."""

import numpy as np


def deletion_test(model, images: np.ndarray, fraction: float = 0.1, seed: int = 0) -> tuple[float, float]:
    """Mean fall of the predicted class's probability when the most salient ink pixels are blanked,
    and when as many random ink pixels are."""
    rng = np.random.default_rng(seed)
    salient: list[float] = []
    random_: list[float] = []
    for img in images:
        pred = model.predict_pixels(img, explain=True)
        ink = np.flatnonzero(img.ravel() > 0)
        k = max(1, round(fraction * len(ink)))
        for chosen, falls in ((ink[np.argsort(-pred.saliency.ravel()[ink], kind="stable")[:k]], salient),
                              (rng.choice(ink, k, replace=False), random_)):
            blanked = img.ravel().copy()
            blanked[chosen] = 0
            falls.append(pred.confidence - model.predict_proba(blanked.reshape(28, 28))[0, pred.index])
    return float(np.mean(salient)), float(np.mean(random_))
