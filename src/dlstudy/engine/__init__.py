"""Training engine: the two loops, the session (build + fit), checkpoints and resume, DDP plumbing.

It computes and returns; the run folder is the job's (dlstudy.jobs.train writes it, report.finish_run closes it).
"""

from dlstudy.engine.loop import evaluate, predict, train_one_epoch

__all__ = ["train_one_epoch", "evaluate", "predict"]
