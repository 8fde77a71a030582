"""Published hardware timing claims: registry, arithmetic, probes, full runs and verdicts."""
