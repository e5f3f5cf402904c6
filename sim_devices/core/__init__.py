"""Shared simulated hardware: the beamtime clock, the storage ring, fault queues, array signals."""
