"""MeshDesk: pool friends' computers into a private mesh that runs large language models."""

__version__ = "0.1.0"
