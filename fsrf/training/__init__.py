"""Experiments on MMSA data: training, robustness evaluation, results files and the demo.

* :mod:`fsrf.training.fit` — :func:`fit` (early stopping, atomic checkpoints, resume, DDP),
  :class:`TrainSettings`, :func:`load_model`;
* :mod:`fsrf.training.checkpoint` — checkpoint files (``weights_only`` loading);
* :mod:`fsrf.training.evaluation` — :func:`robust_eval` under every missingness condition,
  :func:`aggregate_seeds`, :func:`evaluate_checkpoints`;
* :mod:`fsrf.training.results` — ``results.json`` / ``.csv`` / ``robustness.png`` and tables;
* :mod:`fsrf.training.demo` — :func:`run_demo`, the main job on synthetic data.
"""

from fsrf.training.checkpoint import (
                                      load_checkpoint,
                                      resolve_checkpoints,
                                      save_checkpoint,
)
from fsrf.training.demo import run_demo
from fsrf.training.evaluation import (
                                      DEFAULT_RATES,
                                      aggregate_seeds,
                                      evaluate_checkpoints,
                                      parse_patterns,
                                      parse_rates,
                                      robust_eval,
)
from fsrf.training.fit import SELECTIONS, TrainSettings, fit, load_model, predict_split
from fsrf.training.results import format_table, plot_robustness, write_results

__all__ = ["TrainSettings", "SELECTIONS", "fit", "load_model", "predict_split", "save_checkpoint",
           "load_checkpoint", "resolve_checkpoints", "DEFAULT_RATES", "parse_rates", "parse_patterns",
           "robust_eval", "aggregate_seeds", "evaluate_checkpoints", "write_results", "format_table",
           "plot_robustness", "run_demo"]
