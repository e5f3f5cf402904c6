"""compton rehearsal: run, statistics and report."""
