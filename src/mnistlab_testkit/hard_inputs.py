"""Digits that people make and that preprocessing has lost: ink along the frame, tight crops, faint pencil,
a small digit in a large photo, a lens's vignette, an exercise book's ruled page. Each maker returns the hard
image and the same digit made easy (a margin, full contrast, level paper), so that a test can ask for the same
28x28 result from both."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def strokes_image(strokes, brush: int, size: tuple[int, int] = (280, 280), offset=(0, 0)) -> Image.Image:
    """Strokes (lists of points) drawn as the page's pad draws them: round caps and joins, black on white."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for points in strokes:
        points = [(x + offset[0], y + offset[1]) for x, y in points]
        draw.line(points, fill="black", width=brush, joint="curve")
        for x, y in points:
            draw.ellipse([x - brush / 2, y - brush / 2, x + brush / 2, y + brush / 2], fill="black")
    return img


def seven_along_the_top(top: int, brush: int) -> list:
    """A 7 whose bar runs `top` pixels below the pad's top edge."""
    y = top + brush / 2
    return [[(50, y), (230, y), (110, 275)]]


def eight_along_the_top(brush: int) -> list:
    """An 8 filling the pad from its top edge, where its upper loop runs flat along the edge."""
    t = np.linspace(0, 2 * np.pi, 60)
    upper = [(140 + 125 * np.sin(a), max(brush / 2, 85 - 110 * np.cos(a))) for a in t]
    lower = [(140 + 100 * np.sin(a), 212 + 58 * np.cos(a)) for a in t]
    return [upper, lower]


def _ring(cx: float, cy: float, rx: float, ry: float) -> list:
    return [(cx + rx * np.sin(a), cy - ry * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 40)]


# each digit as a pen writes it, in a unit square: its strokes, each a list of (x, y) points
PEN_DIGITS = {
    0: [_ring(0.5, 0.5, 0.22, 0.38)],
    1: [[(0.42, 0.2), (0.55, 0.1), (0.55, 0.9)]],
    2: [[(0.28, 0.28), (0.38, 0.13), (0.55, 0.1), (0.7, 0.18), (0.72, 0.33), (0.3, 0.88), (0.75, 0.88)]],
    3: [[(0.3, 0.15), (0.68, 0.15), (0.48, 0.45), (0.66, 0.55), (0.7, 0.72), (0.58, 0.87), (0.4, 0.89), (0.28, 0.8)]],
    4: [[(0.62, 0.9), (0.62, 0.1), (0.25, 0.65), (0.78, 0.65)]],
    5: [[(0.7, 0.12), (0.35, 0.12), (0.32, 0.45), (0.55, 0.42), (0.7, 0.55), (0.7, 0.75), (0.55, 0.88), (0.3, 0.85)]],
    6: [[(0.65, 0.12), (0.45, 0.25), (0.32, 0.5), (0.32, 0.75), (0.45, 0.88), (0.62, 0.85), (0.68, 0.68), (0.55, 0.55),
         (0.4, 0.57), (0.32, 0.68)]],
    7: [[(0.28, 0.12), (0.74, 0.12), (0.42, 0.9)]],
    8: [_ring(0.5, 0.3, 0.17, 0.19), _ring(0.5, 0.7, 0.21, 0.2)],
    9: [[(0.68, 0.35), (0.55, 0.5), (0.38, 0.45), (0.33, 0.3), (0.45, 0.13), (0.62, 0.15), (0.68, 0.35), (0.6, 0.9)]],
}


def pen_digit(label: int, side: int, pen: int) -> Image.Image:
    """A digit written with a pen `pen` px wide on a white page `side` px a side (PEN_DIGITS)."""
    return strokes_image([[(x * side, y * side) for x, y in s] for s in PEN_DIGITS[label]], pen, (side, side))


def framed(label: int, side: int, inset: int, width: int) -> tuple[Image.Image, Image.Image]:
    """(a pen digit in the middle 70% of a page, inside a frame drawn `inset` px from the page's edge with a line
    `width` px wide, as a form's box holds it; the same page without the frame)."""
    page = Image.new("RGB", (side, side), "white")
    page.paste(pen_digit(label, side, max(3, side // 20)).resize((int(side * 0.7),) * 2), (int(side * 0.15),) * 2)
    boxed = page.copy()
    ImageDraw.Draw(boxed).rectangle([inset, inset, side - 1 - inset, side - 1 - inset], outline="black", width=width)
    return boxed, page


def with_margin(strokes, brush: int) -> tuple[Image.Image, Image.Image]:
    """(the strokes on the 280 px pad, the same strokes with 40 px of paper around them)."""
    return strokes_image(strokes, brush), strokes_image(strokes, brush, (360, 360), (40, 40))


def tight_crop(digit: np.ndarray, side: int = 96) -> tuple[Image.Image, Image.Image]:
    """(an MNIST digit cropped to its ink and scaled to `side` px, dark on white, as a person crops a scan;
    the same with a fifth of paper around it)."""
    ink = ink_box(digit)
    scale = side / max(ink.shape)
    img = Image.fromarray(255 - ink).resize((max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale))),
                                            Image.Resampling.BICUBIC)
    pad = side // 5
    margin = Image.new("L", (img.width + 2 * pad, img.height + 2 * pad), 255)
    margin.paste(img, (pad, pad))
    return img, margin


def dusty(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(an MNIST digit a quarter to a half of a 150-400 px page, with 1-3 specks of dust or dots of the pen, 3-9 px
    across and as dark as ink, more than a third of the digit's size from it, as a scanner or a pen leaves them; the
    same page without them)."""
    side = int(rng.integers(150, 400))
    size = int(rng.integers(side // 4, side // 2))
    page = Image.new("L", (side, side), int(rng.integers(200, 256)))
    shape = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    top, left = (int(v) for v in rng.integers(side // 8, side - size - side // 8, 2))
    page.paste(Image.fromarray(255 - np.asarray(shape)), (left, top), shape)
    dirty = page.copy()
    draw = ImageDraw.Draw(dirty)
    for _ in range(int(rng.integers(1, 4))):
        r, (x, y) = int(rng.integers(1, max(2, side // 100) + 1)), (int(v) for v in rng.integers(2, side - 3, 2))
        if not (left - size // 3 < x < left + size * 4 // 3 and top - size // 3 < y < top + size * 4 // 3):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(0, 90)))
    return dirty, page


def _on_paper(digit: np.ndarray, rng: np.random.Generator, side: int, size: int, paper, ink: float,
              noise: float, margin: int = 0) -> Image.Image:
    canvas = np.zeros((side, side))
    top, left = (int(v) for v in rng.integers(margin, side - size - margin + 1, 2))
    canvas[top:top + size, left:left + size] = np.asarray(
        Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float64) / 255
    gray = paper * (1 - canvas) + ink * canvas + rng.normal(0, noise, canvas.shape)
    return Image.fromarray(np.clip(np.round(gray), 0, 255).astype(np.uint8))


def faint_photo(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(faint pencil: ink 25-40 grey levels darker than grey paper, with sensor noise; the same in full ink)."""
    paper, contrast = rng.uniform(150, 230), rng.uniform(25, 40)
    state = rng.bit_generator.state
    faint = _on_paper(digit, rng, 140, 100, paper, paper - contrast, 3)
    rng.bit_generator.state = state
    return faint, _on_paper(digit, rng, 140, 100, paper, 30, 3)


def dim_photo(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(paper photographed in dim light, darker than mid-grey (50-120), the ink 35-60 grey levels darker still; the
    same on white paper)."""
    paper = rng.uniform(50, 120)
    contrast = rng.uniform(35, min(60.0, paper))
    state = rng.bit_generator.state
    dim = _on_paper(digit, rng, 140, 100, paper, paper - contrast, 3)
    rng.bit_generator.state = state
    return dim, _on_paper(digit, rng, 140, 100, 230, 30, 3)


def chalk_on_a_board(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(light chalk on a board lighter than mid-grey (130-170), 50-80 grey levels lighter than it; the same digit
    in dark ink on white paper)."""
    board, contrast = rng.uniform(130, 170), rng.uniform(50, 80)
    state = rng.bit_generator.state
    chalk = _on_paper(digit, rng, 140, 100, board, board + contrast, 3)
    rng.bit_generator.state = state
    return chalk, _on_paper(digit, rng, 140, 100, 230, 30, 3)


def lined_page(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(a digit on a ruled or squared page, as in an exercise book: lines 1-3 px wide, 18-40 px apart, 30-120 grey
    levels darker than the paper, turned up to 8 degrees, edge to edge, the digit at least a seventh of the page from
    its edges (nearer, preprocessing keeps the lines: it cannot tell the page from a digit cropped tight); the same
    page without its lines)."""
    return _lined(digit, rng, (0, 0, 0, 0))


def slanted_page(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(lined_page photographed at a slant: its lines stop 2-6.5% of the page short of each edge, where the paper
    seen at a slant runs on beyond them, and the camera adds noise; the same page without its lines or noise)."""
    inset = tuple(int(v) for v in rng.uniform(0.02, 0.065, 4) * 300)
    noise = rng.uniform(3, 8)
    ruled, clean = _lined(digit, rng, inset)
    noisy = np.asarray(ruled, np.float64) + rng.normal(0, noise, (ruled.height, ruled.width))
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8)), clean


def lighter_bar(label: int, grey: int) -> tuple[Image.Image, Image.Image]:
    """(an open 4, or a 7 with a crossbar, in pencil at 40 on paper at 245, its bar drawn lighter (`grey`) and running
    past its other strokes nearly to the image's edges; the same on a page with a wide margin)."""
    strokes = {4: [([(200, 40), (80, 170)], 40), ([(200, 40), (200, 260)], 40), ([(20, 170), (260, 170)], grey)],
               7: [([(40, 40), (240, 40), (120, 260)], 40), ([(12, 150), (268, 150)], grey)]}[label]
    img = Image.new("L", (280, 280), 245)
    for points, fill in strokes:
        ImageDraw.Draw(img).line(points, fill=fill, width=6, joint="curve")
    img = img.filter(ImageFilter.GaussianBlur(1))
    wide = Image.new("L", (480, 480), 245)
    wide.paste(img, (100, 100))
    return img, wide


def one_line_page(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(lined_page ruled wider than the crop: one line, through the middle third of the page and so through or
    beside the digit; the same page without it)."""
    return _lined(digit, rng, (0, 0, 0, 0), lone=True)


def grainy_page(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(lined_page photographed with the paper near white (248-252) under sensor noise (sigma 5-7), blurred (sigma
    0.8-1.2): the noise's lighter half is cut off at white, which hides how far its darker half reaches, so that it
    lifts a pixel above the paper's floor in most cells; the same page without its lines or noise, blurred alike)."""
    ruled, clean = _lined(digit, rng, (0, 0, 0, 0))
    blur = ImageFilter.GaussianBlur(rng.uniform(0.8, 1.2))
    lift, noise = rng.uniform(248, 252) - np.median(np.asarray(clean)), rng.uniform(5, 7)
    noisy = np.asarray(ruled.filter(blur), np.float64) + lift + rng.normal(0, noise, (ruled.height, ruled.width))
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8)), clean.filter(blur)


def _lined(digit: np.ndarray, rng: np.random.Generator, inset: tuple[int, ...], lone: bool = False
           ) -> tuple[Image.Image, Image.Image]:
    """lined_page, its lines left out of `inset` pixels along each edge (left, top, right, bottom); `lone`: one line
    across the middle third."""
    side, size = 300, int(rng.integers(90, 160))
    paper, depth = rng.uniform(215, 245), rng.uniform(30, 120)
    step, width, turn = int(rng.integers(18, 41)), int(rng.integers(1, 4)), np.radians(rng.uniform(-8, 8))
    squared = rng.random() < 0.5 and not lone
    lines = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(lines)
    ends = np.array([-side, 2 * side], float)
    offsets = [int(rng.integers(side // 3, 2 * side // 3))] if lone else range(-side, 2 * side, step)
    for offset in offsets:  # lines through the whole page, turned about its centre
        for across in (True, False) if squared else (True,):
            along, at = ends, np.full(2, float(offset))
            x, y = (along, at) if across else (at, along)
            u, v = x - side / 2, y - side / 2
            xr = u * np.cos(turn) - v * np.sin(turn) + side / 2
            yr = u * np.sin(turn) + v * np.cos(turn) + side / 2
            draw.line(list(zip(xr.tolist(), yr.tolist())), fill=255, width=width)
    left, top, right, bottom = inset
    for box, cut in zip([(0, 0, left - 1, side), (0, 0, side, top - 1), (side - right, 0, side, side),
                         (0, side - bottom, side, side)], inset):
        if cut:
            draw.rectangle(box, fill=0)
    page = paper - depth * np.asarray(lines, np.float64) / 255
    state = rng.bit_generator.state
    ruled = _on_paper(digit, rng, side, size, page, 40, 3, margin=side // 7)
    rng.bit_generator.state = state
    return ruled, _on_paper(digit, rng, side, size, paper, 40, 3, margin=side // 7)


def small_in_a_photo(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(a digit 16-40 px tall in a 600 px photo of paper; the same digit filling a 60 px one)."""
    size = int(rng.integers(16, 41))
    return _on_paper(digit, rng, 600, size, 200, 40, 3), _on_paper(digit, rng, 60, 40, 200, 40, 3)


def vignette_photo(digit: np.ndarray, rng: np.random.Generator, fall: float = 70) -> tuple[Image.Image, Image.Image]:
    """(a photo whose paper darkens by `fall` grey levels from the centre to the corners, as a lens or a lamp above
    makes it; the same on level paper)."""
    side, size = 300, int(rng.integers(100, 200))
    state = rng.bit_generator.state
    level = _on_paper(digit, rng, side, size, 215.0, 50, 3)
    rng.bit_generator.state = state
    yy, xx = np.mgrid[0:side, 0:side] / side
    bowl = 215 - fall * 2 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    return _on_paper(digit, rng, side, size, bowl, 50, 3), level


def shadowed_photo(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(a photo with a shadow over a third to two thirds of the page, 30-45% darker, its edge a straight line
    2-6 px soft at any angle, as a hand or a phone casts it; the same without the shadow)."""
    side, size = 300, int(rng.integers(100, 200))
    state = rng.bit_generator.state
    level = _on_paper(digit, rng, side, size, 215.0, 50, 3)
    angle, edge = rng.uniform(0, 2 * np.pi), rng.uniform(0.33, 0.67)
    soft, depth = rng.uniform(2, 6), rng.uniform(0.3, 0.45)
    rng.bit_generator.state = state
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    d = np.cos(angle) * xx + np.sin(angle) * yy
    d = (d - d.min()) / np.ptp(d) * side  # pixels along the angle, 0 to side
    light = 1 - depth / (1 + np.exp(-(d - edge * side) / soft))
    return _on_paper(digit, rng, side, size, 215.0 * light, 50 * light, 3), level


def dashed_page(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """(a digit photographed on a page whose faint lines show only in pieces, near its edges, with specks of
    dirt there too, as a ruled page under uneven light shows them; the same page clean)."""
    side, paper, ink = 300, rng.uniform(200, 230), rng.uniform(40, 70)
    state = rng.bit_generator.state
    clean = np.asarray(_on_paper(digit, rng, side, int(rng.integers(90, 121)), paper, ink, 3, margin=side // 4))
    dashed, band = clean.copy(), side // 8
    for _ in range(int(rng.integers(6, 11))):
        length, faint = int(rng.integers(10, 31)), paper - rng.uniform(20, 35)
        along = int(rng.integers(0, side - length))
        across = int(rng.integers(0, band - 2)) if rng.random() < 0.5 else int(rng.integers(side - band, side - 2))
        if rng.random() < 0.5:
            dashed[across:across + 2, along:along + length] = faint
        else:
            dashed[along:along + length, across:across + 2] = faint
    for _ in range(3):
        y, x = (int(v) if rng.random() < 0.5 else side - 3 - int(v) for v in rng.integers(0, band - 3, 2))
        dashed[y:y + 3, x:x + 3] = paper - 30
    rng.bit_generator.state = state
    return Image.fromarray(dashed), Image.fromarray(clean)


def ink_box(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit cropped to its ink (the rows and columns with a pixel above 30)."""
    rows, cols = np.flatnonzero(digit.max(1) > 30), np.flatnonzero(digit.max(0) > 30)
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def low_resolution_scan(digit: np.ndarray, side: int = 8, depth: int = 255) -> np.ndarray:
    """An MNIST digit as an old low-resolution scan of handwriting keeps it, dark on white: its ink's box fitted into
    a square of 4 side x 4 side pixels (aspect kept, centred), made black and white, then the ink counted in 4x4
    blocks, so each of the side x side pixels has one of 17 grey levels, and the digit fills the image along its
    longer side. A full block is `depth` levels below white: 255, or 16 for the counts saved as they are."""
    ink = Image.fromarray(ink_box(digit))
    fine = 4 * side
    scale = fine / max(ink.size)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.Resampling.BILINEAR)
    bits = np.zeros((fine, fine), bool)
    top, left = (fine - ink.height) // 2, (fine - ink.width) // 2
    bits[top:top + ink.height, left:left + ink.width] = np.asarray(ink) > 127
    counts = bits.reshape(side, 4, side, 4).sum((1, 3))
    return (255 - np.round(counts * depth / 16)).astype(np.uint8)


def enlarged(small: np.ndarray, side: int, margin: int = 0) -> tuple[Image.Image, Image.Image]:
    """(a small image enlarged to `side` px by repeating its pixels (nearest neighbour), with `margin` px of its
    corner's colour added around it after; the same enlarged smoothly, by Pillow's Lanczos)."""
    def framed(img: Image.Image) -> Image.Image:
        out = Image.new("L", (side + 2 * margin,) * 2, int(small[0, 0]))
        out.paste(img, (margin, margin))
        return out
    img = Image.fromarray(small)
    return (framed(img.resize((side, side), Image.Resampling.NEAREST)),
            framed(img.resize((side, side), Image.Resampling.LANCZOS)))


def alike(a: np.ndarray, b: np.ndarray) -> float:
    """The best correlation of two 28x28 images within a pixel's shift (the centre of mass rounds to whole pixels)."""
    return max(np.corrcoef(np.roll(a, (dy, dx), (0, 1)).ravel().astype(float), b.ravel().astype(float))[0, 1]
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def scanned_page(mode: str, size: tuple[int, int] = (2550, 3300)) -> Image.Image:
    """A big white page (a letter-size scan at 300 dpi by default) with one dark 7 in the middle, in PIL's `mode`."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    w, h = size
    u = min(w, h) / 8  # a 7 about a third of the page's shorter side
    corners = [(-1.2, -1.6), (1.2, -1.6), (-0.4, 1.8)]
    draw.line([(w / 2 + a * u, h / 2 + b * u) for a, b in corners], fill=0, width=max(3, int(u / 3)))
    if mode == "1":
        return img.convert("1")
    if mode == "I;16":
        return Image.fromarray(np.asarray(img, dtype=np.uint16) * 257).convert("I;16")
    if mode in ("P", "PA"):
        pal = img.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        return pal if mode == "P" else pal.convert("PA")
    return img.convert(mode)


def close_call(model, digits: np.ndarray, labels: np.ndarray, margin: float = 0.05):
    """A drawing the model cannot decide: two training digits of different classes laid over each other,
    the first blend (in a fixed order) whose top probability lies `margin` or more below UNSURE_BELOW,
    with a clear runner-up and no rejection, as a 140 px dark-on-white PNG image and the model's prediction."""
    from mnistlab.inference import UNSURE_BELOW

    for i in range(len(digits)):
        for j in range(i + 1, len(digits)):
            if labels[i] == labels[j]:
                continue
            for w in (0.5, 0.6, 0.4):
                blend = np.maximum(w * digits[i], (1 - w) * digits[j]).astype(np.float32)
                img = Image.fromarray(255 - np.round(blend * 255 / blend.max()).astype(np.uint8)).resize((140, 140))
                pred = model.predict(img)
                (_, first), (_, second) = pred.top(2)[:2]
                rest = 1 - first - second
                if not pred.rejected and first < UNSURE_BELOW - margin and second > rest and first - second > 0.02:
                    return img, pred
    raise AssertionError("no blend of these digits is a close call for the model")
