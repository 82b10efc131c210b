"""``python -m kerasprune``: the command line (see :mod:`kerasprune.cli`)."""

from kerasprune.cli.main import run

if __name__ == "__main__":
    run()
