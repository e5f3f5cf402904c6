"""What every technique's agent shares: the protocol, stopping rules, linear-Gaussian grid
posteriors and exchange Monte Carlo with the Bayesian free energy. Plain numpy/scipy/numba."""
