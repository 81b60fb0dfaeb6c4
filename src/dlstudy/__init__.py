"""dlstudy: controlled image-classification studies judged by from-scratch metrics."""

__version__ = "0.1.0"
