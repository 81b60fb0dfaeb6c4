"""Which differences are real: intervals and paired tests for classification results (see docs/stats.md).

One arm:  proportion_ci (Wilson, Clopper-Pearson), bootstrap_ci (any metric name of METRICS, percentile or BCa),
          seed_summary (mean, sample std, Student-t interval over seeds).
Two arms on the same test samples: mcnemar (exact, mid-p, chi-square), paired_bootstrap (difference of any
          metric, p-value), paired_t_test (over seeds).
Many pairs: holm. Planning: minimum_detectable_difference.
Reports:  metric_interval (the interval the metric table gives a metric: Wilson for accuracy, else bootstrap).

Pure functions of NumPy arrays; depends only on NumPy, SciPy and dlstudy.metrics.
"""

from dlstudy.stats.bootstrap import METHODS, METRICS, bootstrap_ci, paired_bootstrap
from dlstudy.stats.intervals import Interval, metric_interval
from dlstudy.stats.multiple import holm
from dlstudy.stats.proportions import PROPORTION_METHODS, mcnemar, minimum_detectable_difference, proportion_ci
from dlstudy.stats.seeds import paired_t_test, seed_summary

__all__ = [
    "Interval", "METHODS", "METRICS", "PROPORTION_METHODS", "bootstrap_ci", "holm", "mcnemar", "metric_interval",
    "minimum_detectable_difference", "paired_bootstrap", "paired_t_test", "proportion_ci", "seed_summary",
]
