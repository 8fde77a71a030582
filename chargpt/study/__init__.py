"""Study files to runs to crash-safe results on disk."""
