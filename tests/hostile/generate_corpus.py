#!/usr/bin/env python3
"""Writes the hostile-input corpus: files that have broken image decoders and the jobs around them.
Each file's name says what it is. Deterministic (seeded), so a failure names a file that exists again
on the next run.

    python tests/hostile/generate_corpus.py target/hostile-corpus

Needs Pillow and NumPy (tests/reference/requirements.txt). tests/hostile.rs runs the pipeline over the
result; scripts/reliability.sh measures the CLI's memory over it.
"""
import io
import random
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20261125


def photo(width=96, height=64, seed=1):
    """A small synthetic 'photo': gradients plus noise, so every format has real entropy-coded data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 127 // max(width + height, 1)], -1)
    rgb = np.clip(rgb + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def encoded(image, fmt, **options):
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width, height, bit_depth=8, color_type=2, idat=b"\x78\x9c\x00\x00"):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_bomb(width, height):
    """A 1-bit gray PNG of zeros: every row is a filter byte and width/8 zero bytes, compressed ~1000:1."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_with_dimensions(jpeg, width, height):
    """The same JPEG with its SOF frame header claiming another size."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data) - 9:
        if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 7] = struct.pack(">H", height)
            data[i + 7:i + 9] = struct.pack(">H", width)
            return bytes(data)
        i += 2 + struct.unpack(">H", bytes(data[i + 2:i + 4]))[0] if data[i] == 0xFF else 1
    raise ValueError("no SOF marker")


def gif_with_screen(gif, width, height):
    data = bytearray(gif)
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def jpeg_with_orientation(image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, "JPEG", quality=90, exif=exif.tobytes())


def main(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    rng = random.Random(SEED)
    files = {}

    base = photo()
    valid = {
        "jpeg": encoded(base, "JPEG", quality=85),
        "jpeg-progressive": encoded(base, "JPEG", quality=85, progressive=True),
        "png": encoded(base, "PNG"),
        "gif": encoded(base.convert("P"), "GIF"),
        "webp": encoded(base, "WEBP", quality=80),
        "webp-lossless": encoded(base, "WEBP", lossless=True),
        "bmp": encoded(base, "BMP"),
        "tiff": encoded(base, "TIFF"),
    }
    for name, data in valid.items():
        files[f"valid-{name}"] = data

    files["empty"] = b""
    for i in range(1000):
        files[f"random-{i:04d}"] = rng.randbytes(rng.randint(1, 4096))
    magics = {"jpeg": b"\xff\xd8\xff\xe0", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF89a", "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
              "bmp": b"BM", "tiff-le": b"II*\x00", "tiff-be": b"MM\x00*", "pnm": b"P6\n"}
    for name, magic in magics.items():
        for i in range(60):
            files[f"magic-{name}-random-{i:02d}"] = magic + rng.randbytes(rng.randint(0, 2048))

    # Truncations: every valid file cut at 250 offsets (the whole header region byte by byte, then spread).
    for name, data in valid.items():
        offsets = sorted(set(list(range(1, min(len(data), 120))) + [len(data) * k // 130 for k in range(1, 130)]))
        for cut in offsets[:250]:
            files[f"truncated-{name}-at-{cut:06d}"] = data[:cut]
    # Mutations: bytes flipped, overwritten with extremes, inserted or deleted, 800 per valid file.
    for name, data in valid.items():
        for i in range(800):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                kind = rng.randrange(4)
                at = rng.randrange(len(mutated))
                if kind == 0:
                    mutated[at] ^= 1 << rng.randrange(8)
                elif kind == 1:
                    mutated[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80])
                elif kind == 2:
                    mutated[at:at] = rng.randbytes(rng.randint(1, 16))
                elif len(mutated) > 16:
                    del mutated[at:at + rng.randint(1, 16)]
            files[f"mutated-{name}-{i:03d}"] = bytes(mutated)

    # Absurd dimensions and decompression bombs.
    files["bomb-png-header-100000x100000"] = png_header_only(100_000, 100_000)
    files["bomb-png-header-4294967295x1"] = png_header_only(0xFFFFFFFF, 1)
    files["bomb-png-header-0x0"] = png_header_only(0, 0)
    files["bomb-png-inflates-to-312MB-50000x50000"] = png_bomb(50_000, 50_000)
    files["bomb-jpeg-header-65500x65500"] = jpeg_with_dimensions(valid["jpeg"], 65_500, 65_500)
    files["bomb-jpeg-header-0x0"] = jpeg_with_dimensions(valid["jpeg"], 0, 0)
    files["bomb-gif-screen-65535x65535"] = gif_with_screen(valid["gif"], 65_535, 65_535)
    files["bomb-bmp-header-100000x100000"] = b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 0, 0, 0, 0)
    files["bomb-bmp-negative-height"] = b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 16, -2**31, 1, 24, 0, 0, 0, 0, 0, 0)
    files["large-png-4000x4000-within-limits"] = encoded(Image.new("RGB", (4000, 4000), (30, 60, 90)), "PNG")

    # Lying magic bytes: one format's signature in front of another's body.
    files["lying-png-signature-jpeg-body"] = b"\x89PNG\r\n\x1a\n" + valid["jpeg"][2:]
    files["lying-jpeg-signature-png-body"] = b"\xff\xd8\xff\xe0" + valid["png"][8:]
    files["lying-gif-signature-webp-body"] = b"GIF89a" + valid["webp"][6:]

    # Colour spaces, depths and extreme shapes.
    files["cmyk-jpeg"] = encoded(base.convert("CMYK"), "JPEG", quality=90)
    files["gray-jpeg"] = encoded(base.convert("L"), "JPEG", quality=90)
    files["png-16-bit-gray"] = encoded(Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257)), "PNG")
    rgb16 = (np.asarray(base, np.uint16) * 257).astype(">u2")
    ihdr = struct.pack(">IIBBBBB", base.width, base.height, 16, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + rgb16[row].tobytes() for row in range(base.height))
    files["png-16-bit-rgb"] = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    files["rgba-png"] = encoded(base.convert("RGBA"), "PNG")
    files["palette-png"] = encoded(base.convert("P"), "PNG")
    files["one-by-one-png"] = encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    files["one-by-one-jpeg"] = encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "JPEG")
    files["one-by-100000-png"] = encoded(Image.new("RGB", (1, 100_000), (10, 200, 10)), "PNG")
    files["100000-by-one-png"] = encoded(Image.new("RGB", (100_000, 1), (10, 10, 200)), "PNG")
    for orientation in (0, 1, 3, 6, 8, 9, 255, 65535):
        files[f"exif-orientation-{orientation}"] = jpeg_with_orientation(base, orientation)
    frames = [Image.new("P", (8, 8), i % 256) for i in range(3000)]
    out_gif = io.BytesIO()
    frames[0].save(out_gif, "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)
    files["animated-gif-3000-frames"] = out_gif.getvalue()
    for name in ("jpeg", "png", "gif", "webp"):
        files[f"trailing-garbage-{name}"] = valid[name] + rng.randbytes(5000)

    for name, data in files.items():
        (out / name).write_bytes(data)
    print(f"{len(files)} hostile inputs in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
