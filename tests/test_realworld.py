"""benchmarks/realworld.py: each set holds what it claims, the same for a seed, drawn in allowed fonts only,
and scoring accounts for every image."""

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "benchmarks"))  # benchmark scripts import each other by name, as from their folder

import realworld  # noqa: E402

FREEFONT = {"fonts-freefont-ttf": "truetype/freefont/Free*.ttf"}
# Fonts reserved for judging mnistlab, or used in training: none may be opened to build the suite.
BANNED = ("dejavu", "liberation", "urw", "nimbus", "texgyre", "dkg-handwriting", "breip", "bwht", "femkeklaver",
          "humor-sans", "comic-neue", "dancingscript", "ecolier", "cabinsketch",
          "noto", "roboto", "opensans", "open-sans", "plex", "klee", "kristi", "rufscript", "sjfonts", "purisa",
          "yozfont", "yozvox")
NON_FONT_SETS = ["mnist-tight", "mnist-small", "mnist-pens", "drawings", "fine-pens", "dust"]


@pytest.fixture
def freefont_only(monkeypatch):
    """FreeFont is the one suite font CI certainly installs (fonts-freefont-ttf): every font set is drawn
    in it, its italics standing in for handwriting, so that the suite is the same on every machine."""
    if not realworld.find_fonts(FREEFONT)[0]:
        pytest.skip("FreeFont is not installed (apt-get install fonts-freefont-ttf)")
    monkeypatch.setattr(realworld, "PRINTED_FONTS", FREEFONT)
    monkeypatch.setattr(realworld, "HANDWRITING_FONTS", {"fonts-freefont-ttf": "truetype/freefont/Free*Italic.ttf"})


def test_every_set_holds_n_labelled_pngs_the_same_for_a_seed(freefont_only, data_dir):
    suite = realworld.build_suite(6, seed=3, data_dir=data_dir)
    assert list(suite) == list(realworld.SETS)
    for name, items in suite.items():
        assert len(items) == 6, name
        for data, label in items:
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == "PNG"
                img.load()
                assert min(img.size) >= 1
            if name in realworld.NON_DIGIT_SETS:
                assert label is None
            else:
                assert label in range(10), (name, label)
    assert realworld.build_suite(6, seed=3, data_dir=data_dir) == suite
    assert realworld.build_suite(6, seed=4, data_dir=data_dir, sets=["drawings"])["drawings"] != suite["drawings"]
    for name in realworld.SETS:  # a set built alone (`--sets`) holds the images it holds among the others
        assert realworld.build_suite(6, seed=3, data_dir=data_dir, sets=[name])[name] == suite[name], name


def test_the_mnist_sets_come_from_the_validation_split(freefont_only, data_dir, monkeypatch):
    asked = []
    real = realworld.load_split
    monkeypatch.setattr(realworld, "load_split", lambda *a, **k: asked.append((a, k)) or real(*a, **k))
    realworld.build_suite(2, data_dir=data_dir, sets=["mnist-tight", "mnist-small", "mnist-pens", "lined"])
    assert [(a[:2], k["val_size"]) for a, k in asked] == [(("mnist", "validation"), realworld.VAL_SIZE)]
    asked.clear()
    realworld.build_suite(2, sets=["drawings", "edge"])
    assert not asked  # sets without MNIST digits need no data


def test_no_reserved_or_training_font_is_ever_opened(monkeypatch):
    for pattern in [*realworld.PRINTED_FONTS.values(), *realworld.HANDWRITING_FONTS.values()]:
        assert not any(b in pattern.lower() for b in BANNED), pattern
    opened = []
    real = ImageFont.truetype

    def recording(font, *args, **kwargs):
        opened.append(str(font).lower())
        return real(font, *args, **kwargs)

    monkeypatch.setattr(ImageFont, "truetype", recording)
    sets = [s for s in realworld.SETS if s not in NON_FONT_SETS]  # every set that draws text
    realworld.build_suite(6, seed=1, sets=sets)
    if not opened:
        pytest.skip("none of the suite's fonts is installed")
    assert not [p for p in opened if any(b in p for b in BANNED)]
    assert all(p.startswith(str(realworld.FONT_ROOT)) for p in opened)


def test_a_missing_font_package_is_skipped_with_a_note_naming_it(freefont_only, monkeypatch, capsys):
    monkeypatch.setattr(realworld, "HANDWRITING_FONTS", {"fonts-not-there": "truetype/not-there/*.ttf"})
    suite = realworld.build_suite(3, sets=["handwriting-fonts", "printed"])
    assert list(suite) == ["printed"]
    err = capsys.readouterr().err
    assert "apt-get install fonts-not-there" in err and "handwriting-fonts skipped" in err


def test_a_set_whose_fonts_lack_a_digit_is_skipped(freefont_only, monkeypatch, capsys):
    drawn = realworld.Fonts.draws
    monkeypatch.setattr(realworld.Fonts, "draws", lambda self, path, char: char != "7" and drawn(self, path, char))
    assert realworld.build_suite(2, sets=["printed", "drawings"]).keys() == {"drawings"}
    assert "printed skipped: no installed font draws 7" in capsys.readouterr().err


def test_a_glyph_a_font_lacks_is_never_drawn(freefont_only):
    fonts, path = realworld.Fonts(), realworld.find_fonts(FREEFONT)[0][0]
    assert fonts.draws(path, "7")
    assert not fonts.draws(path, realworld.NO_SUCH_CHAR)
    assert not fonts.draws(path, "\u4e00")  # FreeFont has no CJK: its empty or boxed glyph is refused


def test_scoring_the_shipped_model_accounts_for_every_image(freefont_only):
    from mnistlab import load_model

    suite = realworld.build_suite(12, seed=0, sets=["printed", "non-digits"])
    results = realworld.score(load_model("robust-real"), suite)
    for name, r in results.items():
        assert r["right"] + r["wrong"] + r["rejected"] + r["unreadable"] == r["n"] == 12, name
        assert sum(r["shares"].values()) == pytest.approx(1)
        assert sum(c for *_, c in r["misreads"]) <= r["wrong"]
    assert results["non-digits"]["right"] == 0 and results["non-digits"]["per_digit"] == {}
    assert sum(sum(c.values()) for c in results["printed"]["per_digit"].values()) == 12
    table = realworld.table(results)
    assert "| printed | 12 | " in table and f"| non-digits | 12 | – | {results['non-digits']['wrong']}/12 = " in table


def test_the_hairline_pen_thins_a_stroke_to_one_pixel():
    bar = np.zeros((30, 60), bool)
    bar[10:19, 5:55] = True  # a stroke 9 px wide
    line = realworld.thinned(bar)
    assert line[:, 10:50].sum(0).tolist() == [1] * 40 and line.sum() < bar.sum() // 5
