"""The edits of the near-duplicate evaluation: what shops and re-posters do to a photo, each with a
random strength. Used by scripts/evaluate.py (the evaluation) and by `fit-codes`' checks in tests.

`edit(kind, photo, filler, rng)` returns the edited PIL image and, for "jpeg" and "crop_jpeg_banner",
the JPEG quality to save it with (None otherwise). `filler()` gives a photo that is not in the searched
collection, a new one at each call (backgrounds, collage tiles): an edit then shares its other content
with no other edit, so a group that joins two originals through it is a real mistake.
"""
import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

# The 9 edits of the first evaluation (issue 6) and the 11 of issue 19.
KINDS = (
    "crop", "rescale", "jpeg", "flip", "brightness_contrast", "rotation", "text_overlay", "padding",
    "new_background",
    "blur", "grayscale", "perspective", "stretch", "watermark", "colour", "crop_jpeg_banner", "collage",
    "pasted_small", "sticker", "rotate90",
)


def _perspective_coefficients(src, dst):
    """PIL's PERSPECTIVE data mapping output points `dst` to input points `src`."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(rows, float), np.array(src, float).reshape(8))


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def edit(kind, photo, filler, rng):
    w, h = photo.size
    if kind == "crop":
        f = rng.uniform(0.5, 0.9)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        return photo.crop((x, y, x + cw, y + ch)), None
    if kind == "rescale":
        s = rng.uniform(0.4, 0.8)
        return photo.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BILINEAR), None
    if kind == "jpeg":
        return photo, int(rng.integers(20, 51))
    if kind == "flip":
        return ImageOps.mirror(photo), None
    if kind == "brightness_contrast":
        bright = ImageEnhance.Brightness(photo).enhance(rng.uniform(0.7, 1.3))
        return ImageEnhance.Contrast(bright).enhance(rng.uniform(0.7, 1.3)), None
    if kind == "rotation":
        return photo.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0)), None
    if kind == "text_overlay":
        out = photo.copy()
        draw = ImageDraw.Draw(out)
        for i in range(3):
            draw.text((int(w * 0.05), int(h * (0.1 + 0.3 * i))), "SALE -50% imgfeat", fill=(255, 255, 255))
        return out, None
    if kind == "padding":
        border = int(max(w, h) * rng.uniform(0.1, 0.3))
        return ImageOps.expand(photo, border=border, fill=tuple(int(v) for v in rng.integers(0, 256, 3))), None
    if kind == "new_background":
        return _paste(photo, filler(), rng.uniform(0.4, 0.5), rng), None
    if kind == "blur":
        return photo.filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 4.0))), None
    if kind == "grayscale":
        return ImageOps.grayscale(photo).convert("RGB"), None
    if kind == "perspective":
        d = lambda: rng.uniform(0.0, 0.12)
        src = [(w * d(), h * d()), (w * (1 - d()), h * d()), (w * (1 - d()), h * (1 - d())), (w * d(), h * (1 - d()))]
        dst = [(0, 0), (w, 0), (w, h), (0, h)]
        return photo.transform((w, h), Image.PERSPECTIVE, tuple(_perspective_coefficients(src, dst)), Image.BILINEAR), None
    if kind == "stretch":
        s = rng.uniform(0.6, 0.8)
        size = (int(w * s), h) if rng.random() < 0.5 else (w, int(h * s))
        return photo.resize(size, Image.BILINEAR), None
    if kind == "watermark":
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        step = max(40, min(w, h) // 5)
        for y in range(0, h, step):
            for x in range(-step, w, step * 2):
                draw.text((x + (y // step % 2) * step, y), "(c) imgfeat shop", fill=(255, 255, 255, 140))
        draw.ellipse((w * 0.35, h * 0.35, w * 0.65, h * 0.65), outline=(255, 255, 255, 120), width=max(2, w // 80))
        return Image.alpha_composite(photo.convert("RGBA"), layer).convert("RGB"), None
    if kind == "colour":
        hsv = np.asarray(photo.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(30, 90))) % 256
        shifted = Image.fromarray(hsv, "HSV").convert("RGB")
        return ImageEnhance.Color(shifted).enhance(rng.uniform(0.6, 1.5)), None
    if kind == "crop_jpeg_banner":
        f = rng.uniform(0.75, 0.95)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        cropped = photo.crop((x, y, x + cw, y + ch))
        banner = int(ch * rng.uniform(0.12, 0.2))
        out = Image.new("RGB", (cw, ch + banner), tuple(int(v) for v in rng.integers(0, 256, 3)))
        top = rng.random() < 0.5
        out.paste(cropped, (0, banner if top else 0))
        ImageDraw.Draw(out).text((8, (0 if top else ch) + banner // 3), "FREE SHIPPING - best price", fill=(255, 255, 255))
        return out, int(rng.integers(30, 61))
    if kind == "collage":
        cell = (w // 2, h // 2)
        # Two other photos and a plain card with text, as shop collages have.
        card = Image.new("RGB", cell, tuple(int(v) for v in rng.integers(0, 256, 3)))
        ImageDraw.Draw(card).text((8, cell[1] // 2), "NEW - 3 colours", fill=(255, 255, 255))
        tiles = [filler(), filler(), card]
        rng.shuffle(tiles)
        slot = int(rng.integers(4))
        tiles.insert(slot, photo)
        out = Image.new("RGB", (cell[0] * 2, cell[1] * 2))
        for i, tile in enumerate(tiles):
            out.paste(tile.resize(cell, Image.BILINEAR), ((i % 2) * cell[0], (i // 2) * cell[1]))
        return out, None
    if kind == "pasted_small":
        return _paste(photo, filler(), rng.uniform(0.25, 0.35), rng), None
    if kind == "sticker":
        out = photo.copy()
        sw, sh = int(w * rng.uniform(0.5, 0.65)), int(h * rng.uniform(0.5, 0.65))
        x, y = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
        ImageDraw.Draw(out).rectangle((x, y, x + sw, y + sh), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        return out, None
    if kind == "rotate90":
        return photo.transpose(Image.ROTATE_90 if rng.random() < 0.5 else Image.ROTATE_270), None
    raise ValueError(kind)


def _paste(photo, background, scale, rng):
    """`photo` at `scale` of `background`'s longer side, somewhere on it."""
    out = background.copy()
    bw, bh = out.size
    f = scale * max(bw, bh) / max(photo.size)
    small = photo.resize((max(8, int(photo.width * f)), max(8, int(photo.height * f))), Image.BILINEAR)
    out.paste(small, (int(rng.integers(0, max(1, bw - small.width))), int(rng.integers(0, max(1, bh - small.height)))))
    return out


def save(image, quality, path):
    """Saves as JPEG at `quality` (path's suffix becomes .jpg), else as PNG; returns the path."""
    if quality is not None:
        path = path.with_suffix(".jpg")
        image.save(path, "JPEG", quality=quality)
    else:
        path = path.with_suffix(".png")
        image.save(path)
    return path
