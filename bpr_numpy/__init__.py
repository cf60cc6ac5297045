"""bpr_numpy: Bayesian Personalized Ranking, a NumPy reference with fast numba kernels."""

__version__ = "0.1.0"
