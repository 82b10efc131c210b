#!/usr/bin/env bash
# Set-up and entry points. On a fresh machine:
#   bash run.sh trim   # the main job: Network Trimming of LeNet on real MNIST
#   bash run.sh test   # lint, types, import layers, and every test (core without TensorFlow, then TF, JAX, torch)
# Everything installs into .venv (and .venv-core, a NumPy-only venv for the core's tests).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

venv() {  # venv DIR EXTRAS: create DIR if needed and install kerasprune with EXTRAS into it
    local dir=$1 extras=$2 stamp
    stamp="$dir/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
    if [ ! -f "$stamp" ]; then
        [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip
        "$dir/bin/python" -m pip install -q -e ".[$extras]"
        touch "$stamp"
    fi
}

case "${1:-}" in
trim)
    shift
    venv .venv tensorflow
    exec .venv/bin/python -m kerasprune.examples.lenet_mnist "$@"
    ;;
test)
    shift
    venv .venv tensorflow,jax,torch,tflite,plot,dev,hub
    venv .venv-core dev
    echo "== ruff"; .venv/bin/ruff check kerasprune tests benchmarks
    echo "== mypy --strict"; .venv/bin/mypy
    echo "== import-linter"; .venv/bin/lint-imports --no-cache
    echo "== core tests, NumPy only (no keras or tensorflow installed)"
    .venv-core/bin/python -m pytest -q -p no:cacheprovider tests/core -m "not network"
    echo "== all tests, TensorFlow backend"
    KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 tests -m "not jax" "$@"
    echo "== Keras and command-line tests, JAX backend"
    KERAS_BACKEND=jax .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 tests/keras tests/cli -m "not tensorflow" "$@"
    # torch: one thread per test worker (torch's own threads, fighting over 2 cores, make small
    # models many times slower); tests marked heavy (big models, long runs: no torch-specific
    # code) ran on TensorFlow and JAX above.
    echo "== Keras and command-line tests, torch backend (heavy tests: TensorFlow and JAX only)"
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 tests/keras tests/cli \
        -m "not tensorflow and not jax and not heavy" "$@"
    ;;
*)
    echo "usage: bash run.sh trim [options] | bash run.sh test [pytest options]" >&2
    exit 2
    ;;
esac
