"""Quality of the downstream tools on the synthetic scenes of tests/test_tools.py (benchmarks/results/tools.md).

    PYTHONPATH=. python3 benchmarks/tools_quality.py
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import test_tools as T  # noqa: E402  (the scenes the tests measure)

from zoomjax.tools import downstream_registry  # noqa: E402

clean = T.clean._get_wrapped_function()()       # the fixtures' bodies
img, obj = T.objects._get_wrapped_function()()
reg = downstream_registry()
c8 = T.u8(clean)
rng = np.random.default_rng(2)
noisy = np.clip(c8 + rng.normal(0, 20, c8.shape), 0, 255).astype(np.uint8)
for m in ("nl_means", "tv"):
  t = time.time(); r = reg.call("denoising", T.scene_of(noisy), {"bbox_2d": T.BOX, "method": m}); dt = time.time() - t
  l, t0, rr, b = r.info["window"]
  print(m, "PSNR", round(T.psnr(noisy[t0:b, l:rr], c8[t0:b, l:rr]), 2), "->", round(T.psnr(np.asarray(r.info["edited"])[t0:b, l:rr], c8[t0:b, l:rr]), 2), "sigma est", round(r.info["sigma"], 2), f"{dt:.2f}s")
yy, xx = np.mgrid[0:T.H, 0:T.W]
tt = 1 - 0.65 * np.exp(-(((xx - 250) / 260.0) ** 2 + ((yy - 220) / 200.0) ** 2))
tt = np.minimum(tt, 1 - 0.97 * np.exp(-(((xx - 650) / 70.0) ** 2 + ((yy - 470) / 60.0) ** 2)))
a = np.array([0.92, 0.93, 0.95]); hazy = T.u8(clean * tt[..., None] + a * (1 - tt[..., None]))
t = time.time(); r = reg.call("cloud_removal", T.scene_of(hazy), {"bbox_2d": T.BOX}); dt = time.time() - t
l, t0, rr, b = r.info["window"]; out = np.asarray(r.info["edited"])[t0:b, l:rr]
print("dehaze PSNR", round(T.psnr(hazy[t0:b, l:rr], c8[t0:b, l:rr]), 2), "->", round(T.psnr(out, c8[t0:b, l:rr]), 2), "std", round(hazy[t0:b, l:rr].std(), 1), "->", round(out.std(), 1), "clean", round(c8[t0:b, l:rr].std(), 1), "dark", round(r.info["dark_channel_before"], 3), "->", round(r.info["dark_channel_after"], 3), "A", np.round(r.info["airlight"], 3), f"{dt:.2f}s")
for m in ("otsu", "felzenszwalb"):
  t = time.time(); r = reg.call("segmentation", T.scene_of(img), {"bbox_2d": T.BOX, "method": m}); dt = time.time() - t
  l, t0, rr, b = r.info["window"]; gt = np.zeros_like(obj); gt[t0:b, l:rr] = obj[t0:b, l:rr]; mk = r.info["mask"]
  print(m, "IoU", round((mk & gt).sum() / (mk | gt).sum(), 4), len(r.info["objects"]), f"{dt:.2f}s")
box = [230, 240, 310, 300]
t = time.time(); r = reg.call("image_editing", T.scene_of(img), {"bbox_2d": box, "operation": "remove"}); dt = time.time() - t
l, t0, rr, b = r.info["window"]; out = np.asarray(r.info["edited"]).astype(float)[t0:b, l:rr]; ground = img[~obj].astype(float).mean(0)
print("remove", r.info["window"], "mean dev", np.round(np.abs(out.reshape(-1, 3).mean(0) - ground), 2), "max dev", round(np.abs(out - ground).max(), 1), "red px", int(((out[..., 0] > 150) & (out[..., 1] < 90)).sum()), "obj px in box", int(obj[t0:b, l:rr].sum()), f"{dt:.2f}s")
