import pytest
import torch

from mnistlab.evaluation import evaluation_from_logits, format_accuracy


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
