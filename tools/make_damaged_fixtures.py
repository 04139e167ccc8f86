#!/usr/bin/env python3
"""Makes the photos `tests/damaged_images.rs` cuts into pieces (`tests/fixtures/damaged/`).

Run from the crate root with Pillow installed (`/work/venv/bin/python tools/make_damaged_fixtures.py`):
one photo of the shared ants/bees set (`../shared/datasets/hymenoptera_data/val/bees/
1032546534_06907fe3b3.jpg`), resized to 128 x 96 (Pillow bilinear, antialiased) and saved as

- `photo.jpg` (baseline JPEG, quality 85) and `photo_progressive.jpg` (progressive JPEG),
- `photo.png`, `photo.gif` (256-colour palette) and `photo.webp` (lossy, quality 80),

about 30 KB in all. It also records, for each file and each cut the test makes (every 1/16 of
the length, and the length minus 1 and 2), whether Pillow refuses the cut file
(`Image.open(...).load()` raising, `ImageFile.LOAD_TRUNCATED_IMAGES` off, Pillow's default):
`pillow.json`, a reference the test prints beside its own verdicts. Deterministic: rerunning it
gives the same files.
"""

import io
import json
import os

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "..", "shared", "datasets", "hymenoptera_data", "val", "bees",
                      "1032546534_06907fe3b3.jpg")
OUT = os.path.join(ROOT, "tests", "fixtures", "damaged")


def cuts(n):
    return sorted({n * k // 16 for k in range(1, 16)} | {n - 1, n - 2})


def pillow_refuses(data):
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return False
    except Exception:  # noqa: BLE001 - any failure is a refusal
        return True


def main():
    os.makedirs(OUT, exist_ok=True)
    photo = Image.open(SOURCE).convert("RGB").resize((128, 96), Image.BILINEAR, reducing_gap=None)
    files = {
        "photo.jpg": ("JPEG", {"quality": 85}),
        "photo_progressive.jpg": ("JPEG", {"quality": 85, "progressive": True}),
        "photo.png": ("PNG", {}),
        "photo.gif": ("GIF", {}),
        "photo.webp": ("WEBP", {"quality": 80}),
    }
    verdicts = {}
    for name, (fmt, kw) in files.items():
        buf = io.BytesIO()
        image = photo.convert("P") if fmt == "GIF" else photo
        image.save(buf, fmt, **kw)
        data = buf.getvalue()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        verdicts[name] = {str(c): pillow_refuses(data[:c]) for c in cuts(len(data))}
    with open(os.path.join(OUT, "pillow.json"), "w") as f:
        json.dump(verdicts, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
