"""The explicit context (bench.context): one object per command from flags and environment, the only
reader of os.environ, handed down and shipped to workers; flag > variable > default everywhere."""

import io
import pickle
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

from bench import executors
from bench.context import Context, resolve
from bench.errors import UserError
from tests.helpers import ROOT

ENV_NAMES = {"environ", "getenv", "putenv", "unsetenv", "environb"}


def environment_reads(path: Path) -> list[str]:
    """``file:line`` of every name token that reaches the process environment (comments and strings aside)."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.NAME and tok.string in ENV_NAMES:
            found.append(f"{path.relative_to(ROOT)}:{tok.start[0]}")
    return found


def test_no_module_below_a_main_reads_the_environment():
    files = [p for d in ("bench", "models", "baselines") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50
    reads = [hit for p in files if p != ROOT / "bench" / "context.py" for hit in environment_reads(p)]
    assert reads == [], f"read os.environ in bench.context only, and pass the Context down: {reads}"
    assert environment_reads(ROOT / "bench" / "context.py")  # the scan does see a read


def test_data_roots_flag_then_variable_then_default():
    env = {"MNIST_ROOT": "/env/mnist", "FASHION_MNIST_ROOT": "/env/fashion"}
    assert resolve(environ=env).root("mnist") == Path("/env/mnist")
    assert resolve(environ=env).root("fashion-mnist") == Path("/env/fashion")
    assert resolve(data_root="/flag", environ=env).root("fashion-mnist") == Path("/flag")
    assert resolve(environ={}).root("mnist") == Path("./data")
    assert resolve(environ={"MNIST_ROOT": ""}).root("fashion-mnist") == Path("./data/fashion-mnist")


def test_cache_offline_threads_and_ray_flag_then_variable_then_default():
    env = {"PIE_BENCH_CACHE": "/env/cache", "PIE_BENCH_OFFLINE": "1", "PIE_BENCH_THREADS": "3",
           "PIE_BENCH_RAY_CPUS": "2.5", "RAY_ADDRESS": "auto", "OMP_WAIT_POLICY": "PASSIVE"}
    ctx = resolve(environ=env)
    assert (ctx.cache_dir, ctx.offline, ctx.threads, ctx.ray_cpus, ctx.ray_address, ctx.omp_wait_policy) == (
        Path("/env/cache"), True, 3, "2.5", "auto", "PASSIVE")
    ctx = resolve(cache_dir="/flag", offline=False, threads=5, ray_cpus=4, ray_address="ray://x:1", environ=env)
    assert (ctx.cache_dir, ctx.offline, ctx.threads, ctx.ray_cpus, ctx.ray_address) == (
        Path("/flag"), False, 5, "4", "ray://x:1")
    ctx = resolve(environ={"PIE_BENCH_OFFLINE": "yes", "PIE_BENCH_THREADS": ""})
    assert (ctx.cache_dir, ctx.offline, ctx.threads, ctx.ray_cpus, ctx.ray_address, ctx.progress) == (
        None, False, None, None, None, True)  # only "1" means offline, as before
    assert ctx.cache_folder == Path.home() / ".cache" / "pie-bench"  # in the home of where it is used
    assert resolve(environ=env).cache_folder == Path("/env/cache")


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_thread_count_is_one_line_naming_the_variable(value):
    with pytest.raises(UserError, match=rf"^\$PIE_BENCH_THREADS must be a positive integer, got '{value}'$"):
        resolve(environ={"PIE_BENCH_THREADS": value})


def test_a_bad_thread_count_ends_the_runner_with_exit_2(monkeypatch, capsys):
    from bench.run import main

    monkeypatch.setenv("PIE_BENCH_THREADS", "many")  # what the command itself resolves
    assert main(["--config", "configs/smoke.yaml", "--models", "vae", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert err == "error: $PIE_BENCH_THREADS must be a positive integer, got 'many'\n"


def test_a_context_pickles_without_its_memo():
    ctx = resolve(data_root="/d", threads=2, progress=False, environ={"PIE_BENCH_OFFLINE": "1"})
    ctx.memo.verified.add(("/d/x.gz", 1, 2, "mnist"))
    again = pickle.loads(pickle.dumps(ctx))
    assert again == ctx and again.offline and again.threads == 2 and not again.progress
    assert again.memo.verified == set() and ctx.memo.verified  # a worker verifies for itself


def test_extractors_are_remembered_by_the_context_not_the_module(mnist):
    from bench.classifier import get_classifier

    ctx = Context()
    first = get_classifier(mnist, ctx=ctx)
    assert get_classifier(mnist, ctx=ctx) is first
    assert get_classifier(mnist, ctx=Context()) is not first  # no state outside the context


def test_workers_get_the_context_thread_count_shared_out():
    """PIE_BENCH_THREADS=T with --jobs N: each process worker runs with max(1, T // N) torch threads."""
    assert executors.worker_threads(Context(threads=1), 2) == 1
    assert executors.worker_threads(Context(threads=4), 2) == 2
    assert executors.worker_threads(Context(threads=6), 4) == 1
    pool = executors._new_pool(1, executors.worker_threads(Context(threads=4), 2))
    try:
        assert pool.submit(torch.get_num_threads).result(timeout=120) == 2  # what the spawned worker runs with
    finally:
        pool.shutdown()


def test_importing_the_report_reads_no_file():
    """The paper's numbers are read on the first call of paper_numbers(), not at import."""
    code = ("import pathlib, sys; read = []; real = pathlib.Path.read_text\n"
            "pathlib.Path.read_text = lambda self, *a, **k: (self.suffix == '.yaml' and read.append(self.name)) or "
            "real(self, *a, **k)\n"
            "import bench.report, bench.gpu\n"
            "before = list(read)\n"
            "from bench.report.paper import paper_numbers\n"
            "assert paper_numbers().fig7_latent == 10\n"
            "print(before, read)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[] ['paper_mnist.yaml']"


def test_preset_settings_are_read_once_per_build_not_once_per_process(tmp_path):
    from bench.report.selection import PresetSettings, changed_settings

    (tmp_path / "p.yaml").write_text("vae: {latent_dim: 8}\n")
    first = PresetSettings(tmp_path)
    run = {"preset": "p", "vae": {"latent_dim": 8}}
    assert changed_settings(run, "vae", (), first) == {}
    (tmp_path / "p.yaml").write_text("vae: {latent_dim: 4}\n")  # the preset edited between two builds
    assert changed_settings(run, "vae", (), first) == {}  # one build reads it once
    assert changed_settings(run, "vae", (), PresetSettings(tmp_path)) == {"latent_dim": 8}  # the next sees the edit


def test_a_worker_process_keeps_the_memo_of_the_context_it_was_handed():
    """Each run arrives with a fresh copy of the driver's context; the worker keeps its first, so
    files are verified and extractors loaded once per worker process, not once per run."""
    first = executors.worker_context(pickle.loads(pickle.dumps(Context(threads=1))))
    assert executors.worker_context(pickle.loads(pickle.dumps(Context(threads=1)))) is first
    other = executors.worker_context(Context(threads=2))  # another driver's settings: not the old memo
    assert other is not first and other.threads == 2


def test_the_evaluator_is_the_contexts_and_reads_its_cache_folder(mnist, tmp_path):
    """Evaluator.of(ctx): one per context, kept in its memo (so a worker's runs share the classifier
    and the real statistics), never shipped; its classifier is cached in the context's folder."""
    import dataclasses

    from bench.config import EvalConfig
    from bench.evaluate import Evaluator

    ctx = Context(cache_dir=tmp_path)
    evaluator = Evaluator.of(ctx)
    assert Evaluator.of(ctx) is evaluator and evaluator.ctx is ctx
    assert Evaluator.of(Context(cache_dir=tmp_path)) is not evaluator  # no state outside the context
    assert pickle.loads(pickle.dumps(ctx)).memo.evaluator is None  # a worker makes its own
    tiny = dataclasses.replace(mnist, train_images=mnist.train_images[:256], train_labels=mnist.train_labels[:256])
    evaluator.classifier(tiny, EvalConfig(classifier_epochs=1))  # another recipe than the shipped: trained, cached
    assert len(list(tmp_path.glob("lenet-mnist-*.pt"))) == 1
