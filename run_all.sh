#!/usr/bin/env bash
# pie-bench: set up (venv, package, MNIST) and run the default protocol, or the tests.
#   ./run_all.sh                      Table 1 (every registered model x 5 seeds, latent 8) + Fig. 7 sweep + report
#                                     -> results/local/default, compared with the committed results/ (compare.md)
#   ./run_all.sh --config configs/long.yaml     Table 1 and Fig. 7 (seed 0) until converged (cap 150 epochs, resumable)
#                                     -> results/local/long, with protocol.md: how much of the whole long protocol
#                                     (python -m bench.protocol, configs/long_protocol.yaml) the folder holds
#   ./run_all.sh --config configs/paper.yaml [runner args...]   the paper-sized protocol (GPU) -> results/local/paper
#   ./run_all.sh --dataset fashion-mnist [--config F]   the same on Fashion-MNIST -> results/local/fashion-mnist/<preset>
#   Re-running resumes in the same folder. --out DIR writes elsewhere; --reference writes into the committed
#   reference itself (results/, results/<preset>, results/<dataset>[/<preset>]: maintainers only).
#   ./run_all.sh test                 the whole test suite (pytest + ruff)
set -euo pipefail
cd "$(dirname "$0")"

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv .venv
fi
# Install (or refresh) when the package or its dependencies are missing or pyproject changed.
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] \
   || ! "$PY" -c "import bench, torch, torchvision, umap, seaborn, yaml, tqdm, pytest, ray, safetensors, hypothesis" 2>/dev/null; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e ".[dev,ray]"
  touch .venv/.installed
fi

if [ "${1:-}" = "test" ]; then
  shift
  "$PY" -m ruff check --no-cache .
  # MNIST once, before the tests: $MNIST_ROOT, else ./data, fetched there if missing and the
  # network allows; without it, one line says how to provide the files.
  "$PY" -m bench.data || exit 2
  # Fashion-MNIST likewise ($FASHION_MNIST_ROOT, else ./data/fashion-mnist). Without it the suite
  # still runs: its Fashion-MNIST tests fail, one line each; `-m "not fashion_mnist"` leaves them out.
  if ! "$PY" -m bench.data --dataset fashion-mnist; then
    echo "run_all.sh test: Fashion-MNIST missing: its tests fail (one line each) unless left out: -m 'not fashion_mnist'" >&2
  fi
  export PIE_BENCH_OFFLINE=1            # the tests themselves never touch the network
  "$PY" -m pytest -q "$@"
  exit $?
fi

CONFIG=configs/default.yaml
OUT=
INTO_REFERENCE=0
DATASET=mnist
# Two single-threaded runs at a time use 2 CPU cores better than one run on 2 threads;
# later flags win, so e.g. `./run_all.sh --executor local` overrides this.
ARGS=(--executor process --jobs "${PIE_BENCH_JOBS:-2}")
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --reference) INTO_REFERENCE=1; shift ;;
    --dataset) DATASET="$2"; ARGS+=("$1" "$2"); shift 2 ;;
    --set) [[ "${2:-}" == data.dataset=* ]] && DATASET="${2#data.dataset=}"; ARGS+=("$1" "${2:-}"); shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

# Your runs go to a git-ignored folder of your own (results/local/<preset>, another dataset:
# results/local/<dataset>/<preset>); the committed folder of the same preset and dataset is the
# reference they are compared with (bench/results.py: local_dir, reference_dir).
# A preset with a protocol file (configs/<preset>_protocol.yaml: the long one) also gets OUT/protocol.md,
# how many of the whole protocol's runs (python -m bench.protocol) this folder holds.
{ read -r LOCAL; read -r REF; read -r PROTOCOL; } < <("$PY" -m bench.results --config "$CONFIG" --dataset "$DATASET")
if [ "$INTO_REFERENCE" = 1 ]; then
  [ -n "$OUT" ] && { echo "error: --reference and --out both name the output folder; give one" >&2; exit 2; }
  OUT=$REF
fi
OUT=${OUT:-$LOCAL}
REPORT_ARGS=(--results "$OUT")
if [ -n "$PROTOCOL" ]; then REPORT_ARGS+=(--protocol "$PROTOCOL"); fi
echo "run_all.sh: results -> $OUT"
start=$(date +%s)
status=0
# Table 1: every registered model (bench/registry.py, the runner's default) at latent 8, 5 seeds.
"$PY" -m bench.run --config "$CONFIG" --out "$OUT" --seeds 5 ${ARGS[@]+"${ARGS[@]}"} || status=$?
[ "$status" -eq 2 ] && exit 2
# Figure 7: PIE at latent 10 for each eps^2.
"$PY" -m bench.run --config "$CONFIG" --out "$OUT" --models pie --seeds 1 --set pie.latent_dim=10 \
  --sweep pie.eps2=0.01,0.1,1.0 ${ARGS[@]+"${ARGS[@]}"} || status=$?
[ "$status" -eq 2 ] && exit 2
# Exit 3 (damaged files contained, docs/damage.md) or 1 (a figure not drawn) still ends with the summary.
if [ "$(realpath -m "$OUT")" = "$(realpath -m "$REF")" ]; then
  "$PY" -m bench.report "${REPORT_ARGS[@]}" || { rc=$?; [ "$status" -eq 0 ] && status=$rc; }
else  # yours vs the committed reference vs the paper, a mark per metric: $OUT/compare.md
  "$PY" -m bench.report "${REPORT_ARGS[@]}" --compare-with "$REF" || { rc=$?; [ "$status" -eq 0 ] && status=$rc; }
fi
echo "run_all.sh: finished in $(( $(date +%s) - start )) s (exit $status)"
exit "$status"
