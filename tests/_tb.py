"""Reads the pictures back out of TensorBoard event files (TFRecord framing, tensorboardX's protos)."""

import glob
import io
import os
import struct

import numpy as np
from PIL import Image
from tensorboardX.proto import event_pb2


def events(log_dir: str):
  """Every `Event` of every event file in `log_dir`, in file order."""
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    with open(path, "rb") as fh:
      data = fh.read()
    pos = 0
    while pos < len(data):   # record: uint64 length, uint32 crc, payload, uint32 crc
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event()
      ev.ParseFromString(data[pos + 12:pos + 12 + n])
      yield ev
      pos += 12 + n + 4


def images(log_dir: str) -> dict[tuple[str, int], np.ndarray]:
  """{(tag, step): uint8[H, W, C]} of the image summaries in `log_dir`."""
  out = {}
  for ev in events(log_dir):
    for v in ev.summary.value:
      if v.HasField("image"):
        out[(v.tag, int(ev.step))] = np.asarray(Image.open(io.BytesIO(v.image.encoded_image_string)))
  return out
