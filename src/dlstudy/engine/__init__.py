"""Training engine: the two loops, checkpoints and resume, DDP plumbing, and the train job."""

from dlstudy.engine.loop import evaluate, predict, train_one_epoch

__all__ = ["train_one_epoch", "evaluate", "predict", "run_train_job"]


def run_train_job(cfg, run_dir, resume: bool = False) -> dict:
    """See `dlstudy.engine.job.run_train_job` (imported lazily: it pulls in data, losses and optim)."""
    from dlstudy.engine.job import run_train_job as _run

    return _run(cfg, run_dir, resume=resume)
