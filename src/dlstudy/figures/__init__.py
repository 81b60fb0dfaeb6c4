"""Figures: matplotlib drawing primitives (`plots`) and every figure of a run folder drawn from its files (`run`).

dlstudy.figures is the one package that imports matplotlib; jobs and algorithms never draw.
"""

from dlstudy.figures.plots import (figure_png, plot_confusion_matrix, plot_per_class_accuracy, plot_roc_curves,
                                   save_figure)
from dlstudy.figures.run import draw_run_figures

__all__ = ["draw_run_figures", "figure_png", "plot_confusion_matrix", "plot_per_class_accuracy", "plot_roc_curves",
           "save_figure"]
