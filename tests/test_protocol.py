"""bench.protocol: the long protocol's steps plan the runner's run ids, --status counts what is done,
a protocol runs its steps in order and resumes, and a bad protocol file is one line, exit 2."""

from pathlib import Path

import pytest

from bench.protocol import (
    DEFAULT_PROTOCOL,
    main,
    plan_step,
    progress,
    progress_markdown,
    read_protocol,
    run_state,
    status_lines,
    summary,
)
from bench.results import DONE, RUNS
from tests.helpers import ROOT, SMOKE

LONG = ROOT / "results" / "long"


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the protocol names its preset relative to the repository


def test_committed_protocol_plans_the_issue_s_46_runs_and_the_committed_converged_baselines(in_root):
    protocol = read_protocol(DEFAULT_PROTOCOL)
    plans = {s.name: [r.run_id for r in plan_step(s, protocol.config, str(LONG))] for s in protocol.steps}
    # Table 1 (4 models x 5), Fig. 7 and its additive grid (3 x 3 each), full rank (3), width (2 x 2), schedule (1)
    assert {k: len(v) for k, v in plans.items()} == {
        "table1": 20, "fig7": 9, "fig7-additive": 9, "full-rank": 3, "width": 4, "schedule": 1,
        "full-rank-3-seeds": 9}
    assert sum(len(plans[s.name]) for s in protocol.steps if not s.optional) == 46
    # The converged VAE, WAE and AEF runs committed in results/long are this plan's (same run ids)
    for prefix in ("vae-efe99fae62", "wae-dadd850e0a", "aef-0d59c11d7a"):
        assert {f"{prefix}-s{i}" for i in range(5)} <= set(plans["table1"])
    all_ids = [i for v in plans.values() for i in v]
    assert len(set(all_ids)) == len(all_ids) - 3  # only the full-rank seed 0 runs appear twice


def test_status_counts_committed_runs_as_done_and_converged(in_root):
    protocol = read_protocol(DEFAULT_PROTOCOL)
    table1 = protocol.steps[0]
    ids = [r.run_id for r in plan_step(table1, protocol.config, str(LONG))]
    states = {i: run_state(LONG, i) for i in ids}
    for model in ("vae", "wae", "aef"):
        mine = [s for i, s in states.items() if i.startswith(model)]
        assert [s.state for s in mine] == ["done"] * 5
        assert all(s.converged for s in mine)  # the rule holds on each run's learning curves
    done = sum(s.state == "done" for s in states.values())
    line = status_lines(protocol, [table1], str(LONG))[1]
    assert line.startswith(f"  table1: {done} of 20 runs done, ")


def test_status_shows_a_run_in_progress_with_its_epoch(in_root, tmp_path):
    protocol = read_protocol(DEFAULT_PROTOCOL)
    step = next(s for s in protocol.steps if s.name == "schedule")
    (run_id,) = [r.run_id for r in plan_step(step, protocol.config, str(tmp_path))]
    run_dir = tmp_path / RUNS / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.csv").write_text("epoch,step,train_loss\n1,550,-2.0\n2,1100,-3.0\n")
    assert run_state(tmp_path, run_id).state == "in progress"
    lines = status_lines(protocol, [step], str(tmp_path))
    assert f"in progress: {run_id} (epoch 2)" in lines[1]
    assert lines[-1] == "total: 0 of 1 runs done (0 converged)"


def test_protocol_runs_its_steps_as_one_queue_in_order_and_resumes(tmp_path, capsys):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(f"config: {SMOKE}\nsteps:\n"
                        "  - {name: first, models: [vae], seeds: 1}\n"
                        "  - {name: second, models: [vae], seeds: 1, set: [vae.latent_dim=4]}\n")
    out = tmp_path / "out"
    argv = ["--protocol", str(protocol), "--out", str(out), "--executor", "local", "--jobs", "1", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 run(s) planned: 2 to start, 0 already finished" in printed  # one queue, not one command a step
    assert "total: 2 of 2 runs done" in printed
    first, second = (plan_step(s, SMOKE, str(out))[0].run_id for s in read_protocol(protocol).steps)
    finished = {d.name: (d / DONE).stat().st_mtime_ns for d in (out / RUNS).iterdir() if (d / DONE).is_file()}
    assert finished[first] < finished[second]  # in the steps' order
    assert main(argv) == 0  # again: nothing to train
    assert "2 run(s) planned: 0 to start, 2 already finished" in capsys.readouterr().out


@pytest.mark.parametrize("text, says", [
    ("- a\n", "protocol file"),
    ("", "holds no settings"),
    ("config: configs/long.yaml\nsteps: []\n", "needs 'steps'"),
    ("steps: [{name: a, models: [vae], seeds: 1}]\n", "needs 'config'"),
    ("config: configs/long.yaml\nextra: 1\nsteps: [{name: a, models: [vae], seeds: 1}]\n", "unknown key(s) extra"),
    ("config: configs/long.yaml\nsteps: [{name: a, models: [vae], seeds: 0}]\n", "'seeds' must be a positive"),
    ("config: configs/long.yaml\nsteps: [{name: a, models: [], seeds: 1}]\n", "lists no models"),
    ("config: configs/long.yaml\nsteps: [{name: a, model: [vae], seeds: 1}]\n", "unknown key(s) model"),
    ("config: configs/long.yaml\nsteps: [{name: a, models: [vae], seeds: 1}, {name: a, models: [wae], seeds: 1}]\n",
     "more than once"),
    ("config: configs/long.yaml\nsteps: [{name: a, models: [vae], seeds: 1},"
     " {name: b, models: [nosuch], seeds: 1}]\n", "nosuch"),
    ("config: configs/long.yaml\nsteps: [{name: a, models: [vae], seeds: 1, set: [vae.nosuch=1]}]\n", "nosuch"),
    ("config: configs/long.yaml\nsteps: [{name: a, models: [vae], seeds: 1},"
     " {name: b, models: [vae], seeds: 1, set: [data.val_size=100]}]\n", "data.val_size"),
    ("config: configs/nosuch.yaml\nsteps: [{name: a, models: [vae], seeds: 1}]\n", "does not exist"),
])
def test_bad_protocol_file_is_one_line_exit_2_and_writes_nothing(in_root, tmp_path, capsys, text, says):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(text)
    out = tmp_path / "out"
    assert main(["--protocol", str(protocol), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err
    assert not out.exists()


def test_unknown_step_name_is_one_line_exit_2(in_root, capsys):
    assert main(["--out", str(LONG), "--steps", "table1,nosuch", "--status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nosuch" in err and "table1" in err


def test_protocol_file_names_existing_preset(in_root):
    assert Path(read_protocol(DEFAULT_PROTOCOL).config).is_file()


def test_protocol_md_lists_every_step_and_run_and_no_path_of_this_machine(in_root):
    protocol = read_protocol(DEFAULT_PROTOCOL)
    steps = progress(protocol, list(protocol.steps), str(LONG))
    text = progress_markdown(protocol, steps)
    assert f"**Total: {summary(steps)}.**" in text
    for p in steps:
        assert f"| {p.step.name}" in text and f"| {p.done} of {len(p.states)} | {p.converged} |" in text
        assert all(f"`{s.run_id}`" in text for s in p.states)
    assert str(ROOT) not in text and "/tmp" not in text  # a function of the committed runs alone
    assert summary(steps).startswith(f"{sum(p.done for p in steps if not p.step.optional)} of 46 runs done")


def test_report_with_a_bad_protocol_is_one_line_exit_2_and_writes_nothing(in_root, tmp_path, capsys):
    from bench import report

    bad = tmp_path / "p.yaml"
    bad.write_text("config: configs/long.yaml\nsteps: [{name: a, models: [nosuch], seeds: 1}]\n")
    out = tmp_path / "results"
    out.mkdir()
    assert report.main(["--results", str(out), "--protocol", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nosuch" in err
    assert list(out.iterdir()) == []


def test_committed_protocol_md_is_what_the_committed_runs_give(in_root):
    protocol = read_protocol(DEFAULT_PROTOCOL)
    expected = progress_markdown(protocol, progress(protocol, list(protocol.steps), "results/long"))
    assert (LONG / "protocol.md").read_text() == expected, (
        "results/long/protocol.md differs from what results/long's runs give: run python -m bench.report "
        "--results results/long --readme README.md --protocol configs/long_protocol.yaml")
