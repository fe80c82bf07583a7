"""Reference outputs of timm's RandAugment ops (PIL 13.0, timm 1.0.31) on a
fixed 8x8 RGB image (24x24 for equalize), for `pipeline/src/randaugment/tests.rs`:

    python3 pipeline/reference/randaugment_ops.py > pipeline/reference/randaugment_ops.txt

Each line: `name arg: v0 v1 ...` (HWC u8 values, row-major). Geometric ops use
BICUBIC and the fill (124, 116, 104) = round(255 * ImageNet mean), as timm's
RandAugment under MAE's transform (`interpolation='bicubic'`).
"""
import numpy as np
from PIL import Image, ImageOps, ImageEnhance
from timm.data import auto_augment as aa

def pattern(n):
    img = np.zeros((n, n, 3), np.uint8)
    for y in range(n):
        for x in range(n):
            img[y, x] = ((37 * x + 11 * y * y + 5) % 256, (23 * y + 7 * x * x + 60) % 256, (x * y * 19 + 90) % 256)
    return Image.fromarray(img)

im = pattern(8)
big = pattern(24)  # equalize needs more than 256 pixels per channel to do anything
fill = (124, 116, 104)
kw = dict(fillcolor=fill, resample=Image.BICUBIC)

def out(name, arg, r):
    print(f"{name} {arg}:", " ".join(str(v) for v in np.asarray(r).reshape(-1)))

out("input", 0, im)
out("auto_contrast", 0, aa.auto_contrast(im))
out("input24", 0, big)
out("equalize", 0, aa.equalize(big))
out("invert", 0, aa.invert(im))
for bits in [1, 3, 4]:  # PIL 13 refuses 0 bits (timm's level 10); srmae gives black
    out("posterize", bits, aa.posterize(im, bits))
for t in [256, 128, 30]:
    out("solarize", t, aa.solarize(im, t))
for a in [0, 49, 110]:
    out("solarize_add", a, aa.solarize_add(im, a))
for f in [0.1, 0.6, 1.0, 1.5, 1.9]:
    out("color", f, aa.color(im, f))
    out("contrast", f, aa.contrast(im, f))
    out("brightness", f, aa.brightness(im, f))
    out("sharpness", f, aa.sharpness(im, f))
for d in [-27.0, 13.5]:
    out("rotate", d, aa.rotate(im, d, **kw))
for s in [-0.27, 0.135]:
    out("shear_x", s, aa.shear_x(im, s, **kw))
    out("shear_y", s, aa.shear_y(im, s, **kw))
for p in [-0.45, 0.2]:
    out("translate_x_rel", p, aa.translate_x_rel(im, p, **kw))
    out("translate_y_rel", p, aa.translate_y_rel(im, p, **kw))
