"""Training loop, checkpoints, resume, robustness evaluation and the train/evaluate/demo CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fsrf
from _helpers import version_1_dict
from fsrf import FSRFConfig, cli
from fsrf.training.checkpoint import load_checkpoint, save_checkpoint
from fsrf.data import load_mmsa, make_synthetic
from fsrf.training.trainer import TrainSettings, fit, load_model

TINY_DIMS = {"text": 16, "audio": 6, "vision": 5}
TINY_LENS = {"text": 6, "audio": 6, "vision": 6}
CFG = FSRFConfig(d_model=16, num_heads=2, dropout=0.1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    make_synthetic("mosei", path, n_train=40, n_valid=16, n_test=16, seed=3, dims=TINY_DIMS, seq_lens=TINY_LENS)
    return path


def settings(**kw):
    base = dict(epochs=2, batch_size=16, progress=False, patience=5)
    base.update(kw)
    return TrainSettings(**base)


def test_fit_writes_checkpoints_and_config(tiny_data, tmp_path):
    data = load_mmsa(tiny_data)
    res = fit(data, tmp_path, config=CFG, settings=settings(), seed=7, dataset="mosei", log=None)
    assert res["epochs_run"] == 2 and len(res["history"]) == 2
    for name in ("best.pt", "last.pt", "config.json", "history.json"):
        assert (tmp_path / name).is_file(), name
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["seed"] == 7 and meta["selection"] == "valid" and meta["dataset"] == "mosei"
    assert FSRFConfig.from_dict(meta["model_config"]) == CFG
    model, ck_meta = load_model(tmp_path / "best.pt")
    assert not model.training and ck_meta["seed"] == 7
    # the stored selection score is the validation MAE of the stored model, recomputed independently
    from fsrf.missing import corrupt_split
    from fsrf.training.trainer import predict_split
    maes = []
    for r in (0.0, 0.5):
        sp = data.split("valid") if r == 0 else corrupt_split(data.split("valid"), rate=r, seed=1111)
        maes.append(np.abs(predict_split(model, sp) - sp.labels).mean())
    assert abs(float(np.mean(maes)) - res["best_score"]) < 1e-5


def _final_weights(path):
    return load_checkpoint(path)["model"]


def test_resume_continues_exactly(tiny_data, tmp_path):
    data = load_mmsa(tiny_data)
    fit(data, tmp_path / "straight", config=CFG, settings=settings(epochs=3), seed=5, log=None)
    fit(data, tmp_path / "resumed", config=CFG, settings=settings(epochs=1), seed=5, log=None)
    fit(data, tmp_path / "resumed", config=CFG, settings=settings(epochs=3), seed=5, resume=True, log=None)
    a, b = _final_weights(tmp_path / "straight" / "last.pt"), _final_weights(tmp_path / "resumed" / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_interrupted_run_loses_at_most_the_current_epoch(tiny_data, tmp_path, monkeypatch):
    data = load_mmsa(tiny_data)
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def flaky_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # 40 samples in batches of 16 = 3 steps per epoch: step 8 is in epoch 2
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", flaky_step)
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path, config=CFG, settings=settings(epochs=4), seed=2, log=None)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 1  # epochs 0 and 1 survived the interruption
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    res = fit(data, tmp_path, config=CFG, settings=settings(epochs=4), seed=2, resume=True, log=None)
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2, 3]


def test_resume_refuses_other_settings(tiny_data, tmp_path):
    data = load_mmsa(tiny_data)
    fit(data, tmp_path, config=CFG, settings=settings(epochs=1), seed=1, log=None)
    with pytest.raises(ValueError, match="cannot resume"):
        fit(data, tmp_path, config=CFG, settings=settings(epochs=2), seed=2, resume=True, log=None)


def test_a_run_of_an_older_fsrf_resumes_when_its_config_is_the_one_asked_for(tiny_data, tmp_path):
    from fsrf.config import FIRST_RECONSTRUCTION

    data = load_mmsa(tiny_data)
    old = CFG.replace(pool_norm=False, shared_pool="mean")
    fit(data, tmp_path, config=old, settings=settings(epochs=1), seed=4, log=None)
    # as an fsrf from before the two fields would have saved it
    ck = load_checkpoint(tmp_path / "last.pt")
    v1 = version_1_dict(FSRFConfig.from_saved(ck["model_config"]))
    ck["model_config"] = {k: v for k, v in v1.items() if k not in ("pool_norm", "shared_pool")}
    save_checkpoint(ck, tmp_path / "last.pt")
    assert old.pool_norm is False and {"pooling", "shared_pool"} <= set(FIRST_RECONSTRUCTION)
    with pytest.raises(ValueError, match="another seed or model config"):
        fit(data, tmp_path, config=CFG, settings=settings(epochs=2), seed=4, resume=True, log=None)
    res = fit(data, tmp_path, config=old, settings=settings(epochs=2), seed=4, resume=True, log=None)
    assert [h["epoch"] for h in res["history"]] == [0, 1]


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "model_config": {}, "modality_dims": {"a": 1, "b": 2}}, good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="corrupted, truncated"):
        load_checkpoint(trunc)
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an fsrf checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_tries_to_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fsrf-checkpoint-v1", "model": _Evil(marker), "model_config": {},
                "modality_dims": {}}, evil)
    with pytest.raises(ValueError, match="refused by torch.load"):
        load_checkpoint(evil)
    assert not marker.exists()
    rc = cli.main(["evaluate", "--checkpoint", str(evil), "--data", str(evil)])
    assert rc == 2 and not marker.exists()


def test_settings_validation():
    with pytest.raises(ValueError, match="epochs"):
        TrainSettings(epochs=0)
    with pytest.raises(ValueError, match="selection"):
        TrainSettings(selection="test")
    with pytest.raises(ValueError, match="select_rates"):
        TrainSettings(select_rates=(1.5,))


def test_training_loop_reads_no_loss_from_the_device_per_batch(tiny_data, tmp_path, monkeypatch):
    # the epoch's loss parts are summed on the device and read once per epoch: a float(tensor)
    # per batch would be one host sync each on a GPU
    floats = []
    real = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: floats.append(1) or real(t))
    data = load_mmsa(tiny_data)
    res = fit(data, tmp_path, config=CFG, settings=settings(epochs=1, batch_size=8), seed=7, log=None)
    assert not floats
    row = res["history"][0]
    assert {"total", "task_a", "orth", "kl"} <= set(row) and all(np.isfinite(row[k]) for k in ("total", "task_a"))


def test_fit_with_compile_logs_the_compile_time_once(tiny_data, tmp_path, monkeypatch):
    import functools

    # aot_eager: the same capture of forward and backward as inductor, without minutes of code
    # generation on 2 cores (the inductor step is timed in benchmarks/bench_train_step.py)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    lines = []
    data = load_mmsa(tiny_data)
    res = fit(data, tmp_path, config=CFG, settings=settings(compile=True), seed=7, log=lines.append)
    compile_lines = [line for line in lines if line.startswith("torch.compile:")]
    assert len(compile_lines) == 1, lines
    # 40 samples in batches of 16: a full and a trailing batch size, each compiled once
    assert "(8, 16)" in compile_lines[0]
    assert res["compile_seconds"] > 0 and res["epochs_run"] == 2
    assert all(np.isfinite(row["total"]) for row in res["history"])
    with pytest.raises(TypeError, match="compile must be a bool"):
        TrainSettings(compile="yes")


def test_compiled_step_checks_the_batch_for_nan(tiny_data, tmp_path, monkeypatch):
    # a compiled graph leaves the ops' NaN checks out, so the trainer checks each batch before it
    from fsrf.training import trainer

    bad = {"text": torch.zeros(2, 3, 4), "audio": torch.full((2, 3, 2), float("-inf"))}
    with pytest.raises(ValueError, match=r"inputs\['audio'\] contains NaN or Inf"):
        trainer._check_batch_finite(bad, torch.zeros(2))
    fsrf.set_check_finite(False)
    try:
        trainer._check_batch_finite(bad, torch.zeros(2))  # switched off with the ops' check
    finally:
        fsrf.set_check_finite(True)
    seen = []
    monkeypatch.setattr(trainer, "_check_batch_finite", lambda inputs, labels, masks: seen.append(len(labels)))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the plumbing only
    fit(load_mmsa(tiny_data), tmp_path, config=CFG, settings=settings(compile=True, epochs=1), seed=7, log=None)
    assert seen == [16, 16, 8]


# -- command line ---------------------------------------------------------------------------------

def test_cli_train_and_evaluate(tiny_data, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"d_model": 16, "num_heads": 2}))
    run = tmp_path / "run"
    rc = cli.main(["train", "--data", str(tiny_data), "--dataset", "mosei", "--config", str(cfg), "--epochs", "1",
                   "--batch-size", "16", "--no-progress", "--seeds", "11", "12", "--out", str(run)])
    assert rc == 0
    from fsrf.cli._options import Parser, add_training_options, train_settings
    p = Parser()
    add_training_options(p)
    assert train_settings(p.parse_args(["--compile"])).compile and not train_settings(p.parse_args([])).compile
    assert (run / "seed_11" / "best.pt").is_file() and (run / "seed_12" / "best.pt").is_file()
    out = tmp_path / "eval"
    rc = cli.main(["evaluate", "--checkpoint", str(run), "--data", str(tiny_data), "--rates", "0:0.9:0.3",
                   "--patterns", "a,lv,lav", "--no-progress", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    entry = res["models"]["FSRF"]
    assert set(entry["per_seed"]) == {"11", "12"}
    assert list(entry["mean"]["intra"]) == ["0.0", "0.3", "0.6", "0.9"]
    assert list(entry["mean"]["inter"]) == ["a", "lv", "lav"]
    assert res["meta"]["mask_seed"] == 1111 and res["meta"]["dataset"] == "mosei"
    # mean and std are the mean and the sample std (ddof = 1) of the per-seed values
    v = [entry["per_seed"][s]["intra"]["0.3"]["MAE"] for s in ("11", "12")]
    assert abs(entry["mean"]["intra"]["0.3"]["MAE"] - np.mean(v)) < 1e-12
    assert abs(entry["std"]["intra"]["0.3"]["MAE"] - np.std(v, ddof=1)) < 1e-12
    assert (out / "results.csv").read_text().startswith("model,aggregate,protocol,condition,metric,value,std")
    assert (out / "robustness.png").stat().st_size > 1000
    # a single checkpoint file works too
    rc = cli.main(["evaluate", "--checkpoint", str(run / "seed_11" / "best.pt"), "--data", str(tiny_data),
                   "--rates", "0.5", "--patterns", "none", "--no-progress"])
    assert rc == 0


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--data", "/nonexistent/x.pkl", "--out", "o"], "not found"),
    (["evaluate", "--checkpoint", "/nonexistent", "--data", "x"], "does not exist"),
    (["train", "--data", "{data}", "--out", "{tmp}/o", "--ablate", "dhf,magic"], "--ablate"),
    (["evaluate", "--checkpoint", "{tmp}", "--data", "{data}", "--rates", "0:1.5:0.5"], "[0, 1]"),
    (["evaluate", "--checkpoint", "{tmp}", "--data", "{data}", "--patterns", "lx"], "unknown pattern"),
    (["train", "--data", "{data}", "--out", "{tmp}/o", "--dataset", "imdb"], "invalid choice"),
    (["train", "--data", "{data}", "--out", "{tmp}/o", "--epochs", "0"], "epochs"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, fragment, tiny_data, tmp_path, capsys):
    argv = [a.format(data=tiny_data, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) if "invalid choice" in fragment else _nothing():
        rc = cli.main(argv)
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    from fsrf.training import run_demo

    out = tmp_path / "demo"
    saved = os.umask(0o027)  # an unusual umask, so the check cannot pass by accident
    try:
        res = run_demo(out, quick=True, progress=False, spec={"n": (48, 16, 24), "epochs": 1, "d_model": 16})
    finally:
        os.umask(saved)
    assert list(res["models"]) == ["FSRF", "late fusion + modality dropout", "MulT"]
    for m in res["models"].values():
        assert list(m["mean"]["intra"]) == [f"{0.1 * i:.1f}" for i in range(10)]
        assert list(m["mean"]["inter"]) == ["l", "a", "v", "la", "lv", "av", "lav"]
    cached = list((tmp_path / "fsrf-cache" / "synthetic").glob("*.pkl"))
    assert len(cached) == 1 and not list(out.glob("*.pkl"))  # data in the cache, not with the results
    for path in [out / n for n in ("results.json", "results.csv", "robustness.png", "comparison.md",
                                   "fsrf/seed_1111/best.pt")] + cached:
        assert path.is_file()
        assert path.stat().st_mode & 0o777 == 0o640, path.name  # 0o666 & ~umask, like open()


def test_ddp_two_cpu_processes(tiny_data, tmp_path):
    """torchrun with two gloo processes: trains, and only rank 0 writes the checkpoint."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"d_model": 16, "num_heads": 2}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fsrf",
           "train", "--data", str(tiny_data), "--dataset", "mosei", "--config", str(cfg), "--epochs", "1",
           "--batch-size", "8", "--no-progress", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (tmp_path / "ddp" / "best.pt").is_file()
    meta = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert meta["world_size"] == 2
    assert proc.stdout.count("epoch 1/1") == 1  # rank-0 logging only
    assert proc.stdout.count("training FSRF on") == 1


@pytest.mark.parametrize("n", [128 * 3 + 3, 64 * 2 + 1, 7, 130])
def test_every_rank_runs_the_same_batches(n):
    # with shards of unequal length one rank could train a 2-row trailing batch while another
    # skips its 1-row batch, and the step's collectives would wait forever
    import numpy as np

    from fsrf.training.trainer import _rank_shard

    order = np.random.default_rng(0).permutation(n)
    for world in (1, 2, 3):
        shards = [_rank_shard(order, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        assert len(np.concatenate(shards)) == n - (n % world if world > 1 else 0)
        assert len(np.unique(np.concatenate(shards))) == len(np.concatenate(shards))


def test_the_batch_check_refuses_labels_of_another_length_and_names_nan_labels():
    from fsrf.training import trainer

    good = {"text": torch.zeros(2, 3, 4)}
    with pytest.raises(ValueError, match=r"labels must be a tensor with one row per sample \(2, \.\.\.\); got \(3,\)"):
        trainer._check_batch_finite(good, torch.zeros(3))
    with pytest.raises(ValueError, match="labels contains NaN or Inf"):
        trainer._check_batch_finite(good, torch.tensor([0.0, float("nan")]))
    trainer._check_batch_finite(good, torch.tensor([0, 1]))  # class indices: nothing to check for NaN
