"""Active perception rollouts: protocol templates, crop-request parsing, tools, generator, perception loop.

Public: `parse_crop_request(text, protocol="released" | "multiturn", view_size=None)` (never raises).
The generator and loop import JAX; they load lazily on first use (`zoomjax.rollout.generate`, `.loop`).
"""

from zoomjax.rollout.parse import extract_answer, extract_thinks, parse_crop_request, parse_tool_calls

__all__ = ["parse_crop_request", "parse_tool_calls", "extract_answer", "extract_thinks"]
