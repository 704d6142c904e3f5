"""The chat protocol: the grammar shared by SFT targets, rollouts and rewards.

    from zoomjax.protocol import templates   # versioned prompt / trajectory templates, tags, tool schema
    from zoomjax.protocol import parse       # crop-request, tool-call and tag parsing (never raises)

It sits below `zoomjax.data` (which renders SFT targets with it) and `zoomjax.rollout` (which parses the
model's output with it), and imports neither: only the standard library.
"""

from zoomjax.protocol.templates import PROTOCOLS

__all__ = ["PROTOCOLS"]
