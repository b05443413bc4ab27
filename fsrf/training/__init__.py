"""Experiments on MMSA data: training, robustness evaluation, results files and the demo.

* :mod:`fsrf.training.trainer` — :func:`fit` (early stopping, atomic checkpoints, resume, DDP),
  :class:`TrainSettings`, :func:`load_model`;
* :mod:`fsrf.training.averaging` — :class:`WeightAverage`, the moving average of the weights that
  training selects and saves (``TrainSettings.ema``);
* :mod:`fsrf.training.checkpoint` — checkpoint files (``weights_only`` loading);
* :mod:`fsrf.training.resume` — the checks of the checkpoints a resumed run starts from;
* :mod:`fsrf.training.evaluation` — :func:`robust_eval` under every missingness condition,
  :func:`aggregate_seeds`, :func:`evaluate_checkpoints`;
* :mod:`fsrf.training.results` — ``results.json`` / ``.csv`` / ``robustness.png`` and tables;
* :mod:`fsrf.training.comparison` — :func:`compare`, K models × S seeds under the same masks, with
  paired tests (the comparison harness);
* :mod:`fsrf.training.protocols` — the published protocols' tables (LNLN, CorrKD) and AUILC;
* :mod:`fsrf.training.prediction` — :func:`predict_file`, :func:`write_predictions` (``fsrf predict``);
* :mod:`fsrf.training.lock` — the lock of a run folder;
* :mod:`fsrf.training.demo` — :func:`run_demo`, the main job on synthetic data.
"""

from fsrf.training.averaging import WeightAverage
from fsrf.training.checkpoint import load_checkpoint, resolve_checkpoints, save_checkpoint
from fsrf.training.comparison import DEFAULT_SEEDS, compare, default_specs, format_comparison, paired_tests
from fsrf.training.demo import run_demo
from fsrf.training.evaluation import (DEFAULT_RATES, aggregate_seeds, evaluate_checkpoints, parse_patterns,
                                      parse_rates, robust_eval)
from fsrf.training.trainer import SELECTIONS, TrainSettings, fit, load_model, load_weights, predict_split
from fsrf.training.results import format_table, plot_robustness, write_results
from fsrf.training.prediction import predict_file, write_predictions
from fsrf.training.protocols import PROTOCOLS, auilc, auilc_summary, format_protocol_table

__all__ = ["TrainSettings", "SELECTIONS", "fit", "load_model", "load_weights", "predict_split", "compare",
           "default_specs", "paired_tests", "format_comparison", "DEFAULT_SEEDS", "save_checkpoint",
           "load_checkpoint", "resolve_checkpoints", "DEFAULT_RATES", "parse_rates", "parse_patterns",
           "robust_eval", "aggregate_seeds", "evaluate_checkpoints", "write_results", "format_table",
           "plot_robustness", "run_demo", "WeightAverage", "predict_file", "write_predictions", "PROTOCOLS",
           "auilc", "auilc_summary", "format_protocol_table"]
