"""xps rehearsal: run, statistics and report."""
