"""Active perception rollouts: tools, generator, perception loop (the protocol is `zoomjax.protocol`).

    from zoomjax.rollout import parse_crop_request           # never raises (SPEC §8; zoomjax.protocol.parse)
    from zoomjax.rollout import tools                         # tool registry
    from zoomjax.rollout.generate import Generator, Sampling  # KV-cache generator (imports JAX)
    from zoomjax.rollout.sampling import sample_tokens        # the sampling rule the decoder uses
    from zoomjax.rollout.loop import rollout, LoopConfig, Request
    from zoomjax.rollout.trajectory import Trajectory

`Generator`, `Sampling`, `rollout`, `LoopConfig`, `Request` and `Trajectory` are also reachable here; they
load lazily, so importing the package for parsing does not import JAX.
"""

import importlib

from zoomjax.protocol.parse import extract_answer, extract_thinks, parse_crop_request, parse_tool_calls

_LAZY = {
    "Generator": "zoomjax.rollout.generate", "Sampling": "zoomjax.rollout.generate",
    "GREEDY": "zoomjax.rollout.generate", "ImageInput": "zoomjax.rollout.generate",
    "rollout": "zoomjax.rollout.loop", "LoopConfig": "zoomjax.rollout.loop", "Request": "zoomjax.rollout.loop",
    "Trajectory": "zoomjax.rollout.trajectory",
}

__all__ = ["parse_crop_request", "parse_tool_calls", "extract_answer", "extract_thinks", *sorted(_LAZY)]


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'zoomjax.rollout' has no attribute {name!r}")
