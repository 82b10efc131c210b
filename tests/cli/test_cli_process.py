"""The command run as a process, as users run it: ``python -m kerasprune ...``.

Each process that loads a model imports TensorFlow (seconds), so these run on the
TensorFlow backend only and keep to a few; test_cli_commands.py and test_cli_errors.py run
the same commands in-process on every backend.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import pytest
from cli_helpers import Files, assert_oracle, assert_picture, env, process_test, run_process

import kerasprune
from kerasprune.cli import plots

pytestmark = process_test



def test_summary(files: Files) -> None:
    run = run_process("summary", files.model, "--json", cwd=files.dir)
    assert run.code == 0
    assert run.err == ""  # TensorFlow's native start-up logs are silenced
    doc = run.json()
    assert doc["backend"] == "tensorflow"
    assert [r["name"] for r in doc["layers"] if r["prunable"]] == ["conv1", "conv2b", "conv2a",
                                                                   "fc"]


def test_apoz_then_prune(files: Files, tmp_path: Path) -> None:
    apoz, png, out = tmp_path / "apoz.json", tmp_path / "apoz.png", tmp_path / "small.keras"
    run = run_process("apoz", files.model, "--data", files.data, "-o", apoz, "--plot", png,
                      "--json", "-q", cwd=tmp_path)
    assert run.code == 0 and run.err == ""
    assert_picture(run.json()["plot"], 2, [plots.KEPT, plots.SELECTED, plots.THRESHOLD])
    run = run_process("prune", files.model, "--from", apoz, "--rule", "top", "--fraction",
                      "0.5", "-o", out, cwd=tmp_path)
    assert run.code == 0, run.err
    assert run.err == f"wrote {out}\n"
    assert "deleting neurons of 2 layers (the 0.5 of each layer with the highest APoZ" in (
        run.out)
    saved = keras.saving.load_model(out)
    assert {c.name: c.width for c in kerasprune.costs(saved)}["fc"] == 6


def test_trim_with_report(files: Files, tmp_path: Path) -> None:
    out, report = tmp_path / "trimmed.keras", tmp_path / "report"
    run = run_process("trim", files.model, "--train", files.data, "--val", files.data, "-o",
                      out, "--report", report, "--rounds", "1", "--epochs", "1",
                      "--tolerance", "1", "--rule", "top", "--fraction", "0.5", cwd=tmp_path)
    assert run.code == 0, run.err
    assert "round 0:" in run.err and "round 1:" in run.err  # progress on stderr
    assert "(max_rounds reached; kept round 1)" in run.out  # the result on stdout
    history = json.loads((report / "history.json").read_text())
    assert keras.saving.load_model(out).count_params() == history["rounds"][1]["params"]
    assert_picture(history["pictures"]["apoz_first"], 2, [plots.KEPT, plots.SELECTED])
    assert_picture(history["pictures"]["widths"], 1, ["C1"])  # on top of C0: both halved
    assert (report / "report.md").read_text().startswith(f"# Network Trimming of `{files.model}`")


def test_sensitivity_limits_then_prune_to_a_target(files: Files, tmp_path: Path) -> None:
    limits, png, out = tmp_path / "limits.json", tmp_path / "sens.png", tmp_path / "small.keras"
    run = run_process("sensitivity", files.model, "--data", files.data, "--fractions", "0.5",
                      "--limits-out", limits, "--tolerance", "0.05", "--plot", png, "--json",
                      "-q", cwd=tmp_path)
    assert run.code == 0 and run.err == ""
    assert_picture(run.json()["plot"], 1, ["C0", "C1", "C2"], least=0.0005)
    run = run_process("prune", files.model, "--flops", "0.7", "--limits", limits,
                      "--best-effort", "-o", out, "--json", "-q", cwd=tmp_path)
    assert run.code == 0 and run.err == ""
    doc = run.json()
    shares = json.loads(limits.read_text())["max_fraction"]
    widths = {c.name: c.width for c in kerasprune.costs(keras.saving.load_model(files.model))}
    for name, idx in doc["deleted"].items():
        assert len(idx) <= shares[name] * widths[name] + 1e-9
    assert_oracle(files.model, out, doc["deleted"])


def test_errors_are_one_line(files: Files, tmp_path: Path) -> None:
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF")
    run = run_process("prune", h5, "--layer", "fc", "--neurons", "0", "-o",
                      tmp_path / "o.keras", cwd=tmp_path)
    assert run.code == 1 and run.out == ""
    assert run.err.splitlines() == [f"kerasprune: error: {h5} is a legacy HDF5 file, not a "
                                    ".keras file; kerasprune reads Keras 3 .keras files: load "
                                    "it in Python with keras.saving.load_model (or the tool "
                                    "that made it) and save it with model.save('model.keras')"]
    custom = tmp_path / "custom.keras"
    code = ("import keras\n"
            "@keras.saving.register_keras_serializable(package='kp_process')\n"
            "class Twice(keras.layers.Layer):\n    def call(self, x):\n        return 2 * x\n")
    namespace: dict[str, object] = {}
    exec(code, namespace)
    keras.Sequential([keras.Input((3,)), namespace["Twice"]()]).save(custom)  # type: ignore[operator]
    run = run_process("summary", custom, cwd=tmp_path)
    assert run.code == 1 and run.out == ""
    assert len(run.err.splitlines()) == 1 and "Traceback" not in run.err
    assert run.err.startswith(f"kerasprune: error: {custom} uses custom object "
                              "'kp_process>Twice', not registered in this process")


KILLED_WRITER = """
import sys, time
from pathlib import Path
import kerasprune.cli.io as io
marker, moment, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

def pause(tmp):
    marker.write_text(tmp)
    time.sleep(600)

if moment == "mid-write":  # half of the content is written
    def write(tmp):
        with open(tmp, "w") as f:
            f.write("{half")
            f.flush()
            pause(tmp)
    io.atomic_write(args[0], write)
else:  # the temporary file is complete, and not yet renamed
    io._commit = lambda tmp, target: pause(tmp)
    if moment == "before-rename":
        io.write_json(args[0], {"whole": True})
    else:  # a command
        from kerasprune.cli.main import main
        sys.exit(main(args))
"""


def _killed(tmp_path: Path, moment: str, *args: object) -> Path:
    """Run a write that pauses at ``moment``, SIGKILL it there; the temporary file's path."""
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(marker), moment,
                             *map(str, args)], cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (marker.exists() and marker.read_text()):
            assert proc.poll() is None, "the writer ended before the pause"
            assert time.monotonic() < deadline, "the writer never reached the pause"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    return Path(marker.read_text())


def test_killed_while_saving_a_model_leaves_the_old_file(files: Files, tmp_path: Path) -> None:
    out = tmp_path / "out.keras"
    old = files.model.read_bytes()
    out.write_bytes(old)
    tmp = _killed(tmp_path, "command", "prune", files.model, "--layer", "fc", "--neurons", "0",
                  "-o", out, "--force")
    assert tmp.parent == out.parent and zipfile.is_zipfile(tmp)  # the new model was written
    assert out.read_bytes() == old  # but the old file is whole
    assert keras.saving.load_model(out).get_layer("fc").units == 12


@pytest.mark.parametrize("moment", ["mid-write", "before-rename"])
def test_killed_while_writing_leaves_no_file(moment: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    tmp = _killed(tmp_path, moment, out)
    assert tmp.parent == tmp_path and tmp.exists()  # killed with the temporary file there
    if moment == "before-rename":
        assert json.loads(tmp.read_text()) == {"whole": True}
    assert not out.exists()


def test_help_does_not_import_keras() -> None:
    code = ("import sys\nfrom kerasprune.cli.main import build_parser\n"
            "build_parser().format_help()\nprint('keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False"
