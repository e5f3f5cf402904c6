"""Rehearsals on the simulated beamline, one subpackage per technique: the run through the
RunEngine into the catalog, the planning statistics over many beamtimes, and their reports."""
