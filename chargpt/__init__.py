"""chargpt: scaling studies and benchmarks for small character-level GPT models."""

__version__ = "0.1.0"
