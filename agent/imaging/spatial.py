"""Spatial noise reduction of a class map (seed 001): neighbouring pixels tend to share a chemical state.

A Potts prior on the labels, coupling ``beta`` (nats per agreeing 4-neighbour), solved by mean field: each
pixel's class probabilities are re-weighted by exp(β·Σ_neighbours q_j(c)) for a few sweeps. It keeps small
grains whose pixels are individually decided (a 3-pixel grain's pixel has ≥ 1 agreeing neighbour and loses at
most 3β nats against a likelihood margin of tens of nats) and decides pixels whose own spectra are ambiguous.
The detector's point-spread function correlates neighbours' noise, which the mean field ignores (it is
slightly over-confident at the PSF scale).
"""

from __future__ import annotations

import numpy as np

from agent.imaging.classify import softmax


def neighbour_sum(q: np.ndarray) -> np.ndarray:
    """Σ over the 4 neighbours of q (C, h, w), zero outside the image."""
    s = np.zeros_like(q)
    s[:, 1:, :] += q[:, :-1, :]
    s[:, :-1, :] += q[:, 1:, :]
    s[:, :, 1:] += q[:, :, :-1]
    s[:, :, :-1] += q[:, :, 1:]
    return s


def potts_meanfield(logp: np.ndarray, beta: float = 1.0, iterations: int = 2) -> np.ndarray:
    """Class probabilities (C, h, w) of log-likelihoods ``logp`` (C, h, w) after ``iterations`` mean-field
    sweeps of a Potts prior of coupling ``beta``; ``iterations`` = 0 gives the pixels' own posteriors. A
    window's outer ``iterations`` pixels see part of their neighbourhood only: crop them (the halo)."""
    q = softmax(logp)
    for _ in range(int(iterations)):
        q = softmax(logp + beta * neighbour_sum(q))
    return q
