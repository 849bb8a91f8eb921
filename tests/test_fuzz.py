"""Fuzz tests (hypothesis) of the config loader, the table parser and the run-directory readers.

Inputs (config files, ``--set`` values): random bytes, truncations of the presets and type swaps
of their values give a Config or one ``error:`` line (exit 2), never a traceback. Damage (to
``metrics.csv``, ``config.json``, ``train_log.csv``, ``figures.npz``, ``done.json``): random
bytes, truncations and type swaps give one warning naming the file and lose no row, never a
traceback. In-process calls; one end-to-end report at the end.

Examples per test are few, so the file runs in seconds; ``PIE_BENCH_FUZZ=N`` multiplies them
(the counts in the closing note of issue 26 come from ``PIE_BENCH_FUZZ=40``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import convergence, plots
from bench.config import config_from_dict, load_config, settings_problem
from bench.errors import UserError
from bench.figure_data import IMAGE_KEYS, arrays_problem, load_figure_data
from bench.record import RunRecord, is_real_run_of
from bench.report.figures import FIG7_ARRAYS, _grid_size, _second_temperature_text
from bench.report.selection import settings_changed
from bench.results import STATUSES, DamageLog
from bench.run import main as run_main
from bench.rundir import read_config, read_train_log
from bench.sync import sync_table
from bench.tidy import parse_bytes, read_done, rows_digest
from tests.helpers import ROOT, SMOKE
from tests.results_helpers import make_results

SCALE = int(os.environ.get("PIE_BENCH_FUZZ", "1"))


def fuzz(n: int):
    """``n`` examples (times $PIE_BENCH_FUZZ), no deadline (the machine is shared), no example database."""
    return settings(max_examples=n * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


PRESETS = {p.stem: p.read_bytes() for p in sorted((ROOT / "configs").glob("*.yaml"))}
SMOKE_RAW = yaml.safe_load(PRESETS["smoke"])

# Any value a YAML or JSON file can hold, of any type: what a type swap puts in a setting's place.
scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.sampled_from([0, 1, -1, 2**63, 10**12])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=8)


def one_line(e: Exception) -> bool:
    return len(str(e).splitlines()) == 1 and len(str(e)) > 10


def _load_or_error(path: Path) -> None:
    """The property of the config loader: a Config, or a UserError of one line."""
    try:
        load_config(path)
    except UserError as e:
        assert one_line(e), str(e)


# ----------------------------------------------------------------------------- the config loader (inputs)


@fuzz(60)
@given(data=st.binary(max_size=400))
def test_config_from_random_bytes(data, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    _load_or_error(path)


@fuzz(40)
@given(preset=st.sampled_from(sorted(PRESETS)), cut=st.floats(0, 1))
def test_config_from_a_truncated_preset(preset, cut, tmp_path):
    data = PRESETS[preset]
    path = tmp_path / "c.yaml"
    path.write_bytes(data[: int(len(data) * cut)])
    _load_or_error(path)


@fuzz(80)
@given(section=st.sampled_from([*SMOKE_RAW, "nosuch"]), key=st.text(max_size=12) | st.sampled_from(
    sorted({k for s in SMOKE_RAW.values() for k in s} | {"pr_k", "kid_subsets", "interp_steps", "beta1"})),
       value=values)
def test_config_with_a_value_of_another_type(section, key, value):
    raw = {k: dict(v) for k, v in SMOKE_RAW.items()}
    raw.setdefault(section, {})[key] = value
    try:
        config_from_dict(raw, "fuzz")
    except UserError as e:
        assert one_line(e), str(e)


@fuzz(60)
@given(text=st.text(max_size=40))
def test_an_override_of_any_text(text):
    try:
        load_config(SMOKE, [f"eval.{text}", f"train.epochs={text}"])
    except UserError as e:
        assert one_line(e), str(e)


@fuzz(5)
@given(data=st.binary(max_size=200))
def test_the_runner_on_a_random_config_exits_2_with_one_line_and_writes_nothing(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    path = tmp / "c.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except UserError:
        pass
    else:
        return  # a valid config: training it is not what this test is for
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_main(["--config", str(path), "--models", "vae", "--out", str(tmp / "out")])
    assert code == 2 and err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: ")
    assert not (tmp / "out").exists()


# ----------------------------------------------------------------------------- the table parser (damage)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("fuzz") / "res", models=("vae", "wae"), seeds=(0,))


def _copy(pristine: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("copy") / "res"
    shutil.copytree(pristine, out)
    return out


def _by_run(path: Path) -> dict[str, str]:
    """run_id -> rows_digest of its rows in the table at ``path``: what must survive damage."""
    frame = parse_bytes(path.read_bytes()).frame
    return {r: rows_digest(g) for r, g in frame.groupby(frame["run_id"].astype(str))}


def damaged(data: bytes, how: str, where: float, junk: bytes) -> bytes:
    """``data`` truncated at ``where``, junk written over or into it there, or junk alone."""
    i = int(len(data) * where)
    return {"truncate": data[:i], "overwrite": data[:i] + junk + data[i + len(junk):],
            "insert": data[:i] + junk + data[i:], "replace": junk}[how]


damage_args = {"how": st.sampled_from(["truncate", "overwrite", "insert", "replace"]), "where": st.floats(0, 1),
               "junk": st.binary(min_size=1, max_size=40) | st.sampled_from([b",", b"\n", b'"', b"\x00", b"nan",
                                                                            b"ok", b"failed", b"1e999"])}


@fuzz(60)
@given(data=st.binary(max_size=600))
def test_the_table_parser_on_random_bytes_keeps_only_well_formed_rows(data):
    read = parse_bytes(data)
    frame = read.frame
    if read.broken:
        assert frame.empty
    elif len(frame):
        assert frame["status"].isin(STATUSES).all()
        assert pd.to_numeric(frame["value"], errors="coerce").notna().sum() >= 0  # numeric or empty, never text
        assert all(isinstance(r, str) and r for r in frame["run_id"])


@fuzz(30)
@given(**damage_args)
def test_a_damaged_table_loses_no_row(pristine, tmp_path_factory, how, where, junk):
    out = _copy(pristine, tmp_path_factory)
    path = out / "metrics.csv"
    path.write_bytes(damaged(path.read_bytes(), how, where, junk))
    lines = []
    damage = DamageLog(echo=lines.append)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        sync = sync_table(out, damage)
    assert not sync.lost and not damage  # every run directory is intact: nothing to name there
    assert all(line.startswith(("warning: ", "note: ")) for line in err.getvalue().splitlines())
    assert _by_run(path) == _by_run(pristine / "metrics.csv")


@fuzz(30)
@given(run=st.sampled_from(["vae", "wae", "real"]), **damage_args)
def test_a_damaged_run_copy_loses_no_row(pristine, tmp_path_factory, run, how, where, junk):
    out = _copy(pristine, tmp_path_factory)
    run_dir = next((out / "runs").glob(f"{run}-*"))
    own = run_dir / "metrics.csv"
    own.write_bytes(damaged(own.read_bytes(), how, where, junk))
    lines = []
    with contextlib.redirect_stderr(io.StringIO()):
        sync_table(out, DamageLog(echo=lines.append))
    assert len(lines) <= 1 and all(line.startswith(f"warning: {own} ") for line in lines)
    assert _by_run(out / "metrics.csv") == _by_run(pristine / "metrics.csv")
    assert _by_run(own) == {run_dir.name: _by_run(pristine / "metrics.csv")[run_dir.name]}  # whole again


@fuzz(15)
@given(table=st.fixed_dictionaries(damage_args), own=st.fixed_dictionaries(damage_args))
def test_both_copies_damaged_never_raises_and_never_skips_the_run(pristine, tmp_path_factory, table, own):
    out = _copy(pristine, tmp_path_factory)
    run_dir = next((out / "runs").glob("vae-*"))
    for path, how in ((out / "metrics.csv", table), (run_dir / "metrics.csv", own)):
        path.write_bytes(damaged(path.read_bytes(), **how))
    with contextlib.redirect_stderr(io.StringIO()):
        sync = sync_table(out, DamageLog(echo=lambda _m: None))
    intact = _by_run(out / "metrics.csv").get(run_dir.name) == _by_run(pristine / "metrics.csv")[run_dir.name]
    assert intact or sync.lost == [run_dir]  # its rows are whole, or it is handed back to be run again


# ----------------------------------------------------------------------------- the run-directory readers (damage)


def _swap(tree, path: list, value):
    """``tree`` with the value at ``path`` (keys/indices, as far as they lead) replaced by ``value``."""
    if not path or not isinstance(tree, dict | list) or not tree:
        return value
    if isinstance(tree, dict):
        key = sorted(tree)[path[0] % len(tree)]
        return {**tree, key: _swap(tree[key], path[1:], value)}
    i = path[0] % len(tree)
    return [*tree[:i], _swap(tree[i], path[1:], value), *tree[i + 1:]]


def _config_consumers(config: dict) -> None:
    """What the report and the runner read from a config.json: none of it may raise."""
    _grid_size(config, 16)
    _second_temperature_text(config)
    settings_changed(config, "pie")
    is_real_run_of("real-0badc0de-01234567", config.get("eval"))
    record = RunRecord.from_dict(config)
    assert record.extends(record) and record.run_id


@fuzz(40)
@given(kind=st.sampled_from(["bytes", "truncate", "swap"]), data=st.binary(max_size=300), cut=st.floats(0, 1),
       path=st.lists(st.integers(0, 50), min_size=1, max_size=3), value=values)
def test_a_damaged_config_json_reads_as_absent_with_one_warning(pristine, tmp_path_factory, kind, data, cut, path,
                                                                value):
    out = _copy(pristine, tmp_path_factory)
    run_dir = next((out / "runs").glob("vae-*"))
    file = run_dir / "config.json"
    good = file.read_bytes()
    text = {"bytes": data, "truncate": good[: int(len(good) * cut)],
            "swap": json.dumps(_swap(json.loads(good), path, value)).encode()}[kind]
    file.write_bytes(text)
    lines = []
    config = read_config(run_dir, DamageLog(echo=lines.append))
    if config:
        assert not lines and settings_problem(config) == ""
        _config_consumers(config)
    else:
        assert len(lines) == 1 and lines[0].startswith(f"warning: {file} ")


@fuzz(40)
@given(kind=st.sampled_from(["bytes", "truncate", "swap"]), data=st.binary(max_size=300), cut=st.floats(0, 1),
       row=st.integers(0, 10), col=st.integers(0, 10), cell=st.text(max_size=10) | st.sampled_from(["nan", "1e999"]))
def test_a_damaged_train_log_reads_as_absent_with_one_warning(pristine, tmp_path_factory, kind, data, cut, row,
                                                              col, cell):
    out = _copy(pristine, tmp_path_factory)
    run_dir = next((out / "runs").glob("vae-*"))
    file = run_dir / "train_log.csv"
    good = pd.read_csv(file)
    if kind == "swap":
        swapped = good.astype(object)
        swapped.iat[row % len(good), col % good.shape[1]] = cell
        swapped.to_csv(file, index=False)
    else:
        file.write_bytes(data if kind == "bytes" else file.read_bytes()[: int(file.stat().st_size * cut)])
    lines = []
    log = read_train_log(run_dir, DamageLog(echo=lines.append))
    if log is None:
        assert len(lines) == 1 and lines[0].startswith(f"warning: {file} ")
    else:
        assert not lines and "epoch" in log
        convergence.judge(log)


arrays = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill).astype(dtype),
    st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "U3", "complex64"]),
    st.lists(st.integers(0, 5), max_size=5).map(tuple), st.integers(0, 300))


@fuzz(40)
@given(kind=st.sampled_from(["bytes", "truncate", "swap"]), data=st.binary(max_size=300), cut=st.floats(0, 1),
       key=st.sampled_from(FIG7_ARRAYS), array=arrays)
def test_damaged_figure_arrays_read_as_absent_with_one_warning(pristine, tmp_path_factory, kind, data, cut, key,
                                                               array):
    out = _copy(pristine, tmp_path_factory)
    run_dir = next((out / "runs").glob("wae-*"))
    file = run_dir / "figures.npz"
    if kind == "swap":
        with np.load(file) as npz:
            kept = dict(npz)
        np.savez_compressed(file, **{**kept, key: array})
    else:
        file.write_bytes(data if kind == "bytes" else file.read_bytes()[: int(file.stat().st_size * cut)])
    lines = []
    found, err = load_figure_data(run_dir, FIG7_ARRAYS, DamageLog(echo=lines.append))
    if err:
        assert not found and len(lines) == 1 and lines[0].startswith(f"warning: {file} ")
    else:
        assert not lines and arrays_problem({k: (v * 255).round().astype(np.uint8) if k in IMAGE_KEYS else v
                                             for k, v in found.items()}) == ""
        for k in IMAGE_KEYS:
            if k in found:
                plots.make_grid(found[k], 4)  # what the figures do with them


@fuzz(40)
@given(data=st.binary(max_size=200) | st.builds(lambda v: json.dumps({"rows": v, "rows_sha256": v}).encode(), values))
def test_a_damaged_done_json_never_raises(data, tmp_path):
    (tmp_path / "done.json").write_bytes(data)
    done = read_done(tmp_path)
    assert done.problem or not done.verifiable or (isinstance(done.rows, int) and len(done.digest) == 64)


# ----------------------------------------------------------------------------- end to end


@fuzz(2)
@given(file=st.sampled_from(["figures.npz", "config.json", "metrics.csv", "train_log.csv", "done.json"]),
       **damage_args)
def test_the_report_is_always_built(pristine, tmp_path_factory, file, how, where, junk):
    from bench import report

    out = _copy(pristine, tmp_path_factory)
    path = next((out / "runs").glob("vae-*")) / file
    path.write_bytes(damaged(path.read_bytes(), how, where, junk))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = report.main(["--results", str(out)])
    assert code in (0, 3) and (out / "index.md").is_file() and (out / "table1.md").is_file()
    assert all(line.startswith(("warning: ", "report built;", "note: ")) for line in err.getvalue().splitlines())
