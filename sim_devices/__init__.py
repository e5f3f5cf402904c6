"""Simulated beamline: ophyd devices on one beamtime clock, the sample physics behind them."""
