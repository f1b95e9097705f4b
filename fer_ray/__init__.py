"""fer-ray: distributed batch facial emotion recognition on Ray."""

__version__ = "0.1.0"
