"""xas rehearsal: run, statistics and report."""
