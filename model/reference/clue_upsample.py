"""Reference for `model/src/layers/clue_upsample.rs`: PIL's bicubic upsampling of a
2x2 float image to 8x8 (the values pasted in `bicubic_matches_pil`).

    python model/reference/clue_upsample.py
"""
import numpy as np
import PIL
from PIL import Image

img = Image.fromarray(np.array([[0, 1], [2, 4]], dtype=np.float32), mode="F")
up = np.asarray(img.resize((8, 8), Image.Resampling.BICUBIC))
print("Pillow", PIL.__version__)
for row in up[:2]:
    print("[" + ", ".join(f"{v:.4f}" for v in row) + "]")
