"""segment-worker: lifecycle segments, transitions and signed n8n campaign events (the I/O side; rules/ is pure)."""

__version__ = "0.2.0"
