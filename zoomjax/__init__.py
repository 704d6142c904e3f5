"""zoomjax: ZoomEarth (active perception for UHR remote-sensing VQA) in JAX/Flax."""

__version__ = "0.1.0"
