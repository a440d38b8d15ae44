"""dermbench: benchmark harness for dermatology vision foundation models (DermINO protocol)."""
__version__ = "0.1.0"
