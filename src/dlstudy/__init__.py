"""dlstudy: controlled image-classification studies judged by from-scratch metrics.

    import dlstudy
    run = dlstudy.train({"data": {"name": "digits"}, "model": {"name": "smallcnn"}}, out="runs")
    study = dlstudy.run_study("studies/optimizers-quick.yaml", out="runs")
    model = dlstudy.load_run(run.path)

The entry points live in dlstudy.api and are imported on first use, so `import dlstudy` stays light.
"""

__version__ = "0.1.0"

_API = ("train", "fit_svm", "run_study", "read_run", "RunResult", "StudyResult")
__all__ = ["load_run", *_API]


def load_run(run_dir, device: str = "cpu"):
    """The classifier of a finished train or svm run folder (see dlstudy.inference.load_run)."""
    from dlstudy.inference import load_run as _load_run

    return _load_run(run_dir, device)


def __getattr__(name: str):
    if name in _API:
        from dlstudy import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlstudy' has no attribute {name!r}")
