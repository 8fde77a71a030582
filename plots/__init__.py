"""Figures and tables from results/<study> directories (reads CSV/JSON only)."""
