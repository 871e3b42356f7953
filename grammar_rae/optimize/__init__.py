"""Latent-space Bayesian optimisation: objectives, sparse GP, acquisition, the BO loop."""
