"""Generated modules of ``inference``, the Open Inference Protocol v2 (``make protos``)."""
