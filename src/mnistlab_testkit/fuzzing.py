"""A seeded mutation fuzzer for image decoding: one digit saved in every format and pixel mode
Pillow writes here, and byte-level mutations of those files. Used by the tests (a bounded
run) and by benchmarks/fuzz.py (the full count)."""

from __future__ import annotations

import io
import json
import random

from PIL import Image, ImageDraw

# (format, mode, save options): every format Pillow both writes and reads here, in the modes
# people's files come in, including the unusual ones (16-bit, float, LAB, CMYK, 1-bit, palette)
VARIANTS: list[tuple[str, str, dict]] = [
    ("PNG", "L", {}), ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "P", {"transparency": 0}),
    ("PNG", "I;16", {}), ("PNG", "1", {}), ("PNG", "LA", {}),
    ("JPEG", "L", {}), ("JPEG", "RGB", {"progressive": True}), ("JPEG", "CMYK", {}),
    ("GIF", "P", {}), ("BMP", "RGB", {}), ("BMP", "P", {}), ("BMP", "1", {}), ("DIB", "L", {}),
    ("TIFF", "L", {"compression": "tiff_lzw"}), ("TIFF", "RGB", {"compression": "tiff_deflate"}),
    ("TIFF", "LAB", {}), ("TIFF", "F", {}), ("TIFF", "I;16", {}), ("TIFF", "CMYK", {}), ("TIFF", "1", {}),
    ("WEBP", "RGB", {}), ("WEBP", "RGBA", {"lossless": True}), ("AVIF", "RGB", {}),
    ("ICO", "RGBA", {}), ("ICNS", "RGBA", {}), ("DDS", "RGBA", {}), ("DDS", "L", {}),
    ("PPM", "RGB", {}), ("PPM", "L", {}), ("PPM", "1", {}), ("TGA", "RGBA", {}), ("PCX", "P", {}),
    ("SGI", "RGB", {}), ("IM", "L", {}), ("SPIDER", "F", {}), ("QOI", "RGBA", {}), ("JPEG2000", "RGB", {}),
    ("MSP", "1", {}), ("XBM", "1", {}), ("BLP", "P", {}), ("PALM", "1", {}),
]


def digit(size: int = 64) -> Image.Image:
    """A dark "7" on light paper."""
    img = Image.new("L", (size, size), 235)
    ImageDraw.Draw(img).line([(14, 14), (50, 14), (26, 54)], fill=20, width=7)
    return img


def seed_files() -> dict[str, bytes]:
    """label -> file bytes for every variant that this Pillow can write and read back."""
    files = {}
    for fmt, mode, options in VARIANTS:
        img = digit()
        img = img.convert("RGB").convert(mode) if mode in ("LAB", "CMYK") else img.convert(mode)
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt, **options)
            Image.open(io.BytesIO(buf.getvalue())).load()
        except Exception:  # a plugin or codec this Pillow build lacks
            continue
        files[f"{fmt} {mode}"] = buf.getvalue()
    return files


def json_bodies() -> dict[str, bytes]:
    pixels = [[0] * 28 for _ in range(28)]
    for r in range(6, 22):
        pixels[r][14] = 255
    return {"JSON pixels": json.dumps({"pixels": pixels}).encode()}


INTERESTING = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
               b"\x00\x00\xff\xff", b"\xff\xff\x00\x00", b"\x00\x01\x00\x00", b"\x10\x00\x10\x00"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random edits: bit flips, random bytes, extreme integers, cuts, insertions,
    duplicated chunks, truncation; half of them aimed at the first 64 bytes, where headers are."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        if not b:
            break
        i = rng.randrange(min(len(b), 64)) if rng.random() < 0.5 else rng.randrange(len(b))
        op = rng.randrange(7)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            b[i:i + 4] = rng.choice(INTERESTING)
        elif op == 3:
            del b[i:i + rng.randrange(1, 64)]
        elif op == 4:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 5:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 256)]
        else:
            del b[i:]
    return bytes(b)
