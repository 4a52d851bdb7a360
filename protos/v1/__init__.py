"""Generated modules for ``pdeserve.v1`` (see ``python -m pdeserve.protos.generate``)."""
