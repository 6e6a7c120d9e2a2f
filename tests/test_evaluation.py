import numpy as np
import pytest
import torch

from mnistlab.evaluation import evaluation_from_logits, evaluation_from_probs, fit_temperature, format_accuracy


def test_format_accuracy():
    assert format_accuracy(9879, 10000) == "9879/10000 = 98.79%"
    assert format_accuracy(1, 3) == "1/3 = 33.33%"


def test_confusion_precision_recall():
    classes = ("a", "b", "c")
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    ev = evaluation_from_logits(torch.nn.functional.one_hot(pred, 3).float() * 5, labels, classes)
    assert ev.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert (ev.correct, ev.total) == (4, 6)
    assert ev.precision() == pytest.approx([0.5, 2 / 3, 1.0])
    assert ev.recall() == pytest.approx([0.5, 1.0, 0.5])
    assert ev.most_confused() == [("a", "b", 1), ("c", "a", 1)]
    report = ev.report()
    assert "4/6 = 66.67%" in report and "a -> b: 1" in report
    d = ev.to_dict()
    assert d["correct"] == 4 and d["confusion"][2] == [1, 0, 1]


def test_two_classes_report_without_error():
    # 2x2 has four cells: asking for the top 5 confusions must not fail (it raised in topk)
    ev = evaluation_from_logits(torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1, 1]), ("a", "b"))
    assert ev.most_confused() == [("b", "a", 1)] and "b -> a: 1" in ev.report()


def test_calibration_metrics_by_hand():
    classes = ("a", "b")
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    ev = evaluation_from_probs(probs, labels, classes)
    assert ev.correct == 3
    # bins: 0.9 (two samples, one right), 0.8 (right), 0.6 (right): |1.8-1| + |0.8-1| + |0.6-1| over 4
    assert ev.ece == pytest.approx((0.8 + 0.2 + 0.4) / 4)
    assert ev.loss == pytest.approx(-(np.log(0.9) + np.log(0.1) + np.log(0.8) + np.log(0.6)) / 4)
    assert ev.brier == pytest.approx((0.02 + 1.62 + 0.08 + 0.32) / 4)


def test_fit_temperature_recovers_a_known_temperature():
    torch.manual_seed(0)
    true_logits = torch.randn(20000, 10) * 3
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1).flatten()
    t = fit_temperature(true_logits * 2.5, labels)  # an overconfident model: logits 2.5x too big
    assert t == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)
