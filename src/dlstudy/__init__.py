"""dlstudy: controlled image-classification studies judged by from-scratch metrics."""

__version__ = "0.1.0"


def load_run(run_dir, device: str = "cpu"):
    """The classifier of a finished train or svm run folder (see dlstudy.inference.load_run)."""
    from dlstudy.inference import load_run as _load_run  # lazy: `import dlstudy` stays light

    return _load_run(run_dir, device)
