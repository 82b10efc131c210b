"""Every error of the command line: one line on stderr, a non-zero exit code, no traceback.

Run in-process through main() (cheap); test_cli_process.py checks the same in a real
process for a few of them.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from cli_helpers import Files, run_in_process

from kerasprune.cli.errors import EXIT_ERROR, EXIT_USAGE

CUSTOM = '''
import keras

@keras.saving.register_keras_serializable(package="kp_cli_test")
class Twice(keras.layers.Layer):
    def call(self, x):
        return 2 * x
'''



@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a custom layer, saved; the module defining it, beside it (not imported)."""
    directory = tmp_path_factory.mktemp("custom")
    (directory / "kp_cli_custom_layers.py").write_text(CUSTOM)
    namespace: dict[str, object] = {}
    exec(CUSTOM.replace("kp_cli_test", "kp_cli_test_saved"), namespace)
    twice = namespace["Twice"]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                              twice(name="twice")])  # type: ignore[operator]
    model.save(directory / "custom.keras")
    # the saved file names the class kp_cli_test_saved>Twice; the module on disk registers
    # kp_cli_test>Twice, so loading needs the rename below to find it
    (directory / "kp_cli_custom_layers.py").write_text(CUSTOM.replace("kp_cli_test",
                                                                      "kp_cli_test_saved"))
    keras.saving.get_custom_objects().pop("kp_cli_test_saved>Twice", None)
    return directory / "custom.keras"


def _error(capsys: pytest.CaptureFixture[str], *args: object, code: int = EXIT_ERROR) -> str:
    run = run_in_process(capsys, *args)
    assert run.code == code, run
    assert run.out == ""
    return run.error_line


def test_model_files(files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.keras"
    assert _error(capsys, "summary", missing) == f"{missing}: no such file"
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n")
    assert "is a legacy HDF5 file, not a .keras file" in _error(capsys, "summary", h5)
    txt = tmp_path / "model.txt"
    txt.write_text("x")
    assert "is not a .keras file (its name ends in '.txt')" in _error(capsys, "summary", txt)
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    assert "is not a valid .keras file: it is not a zip archive" in _error(capsys, "summary", bad)
    empty = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("metadata.json", "{}")
    assert "has no config.json" in _error(capsys, "summary", empty)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    assert "is a TensorFlow SavedModel directory" in _error(capsys, "summary", saved)


def test_unreadable_model(files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.keras"
    locked.write_bytes(files.model.read_bytes())
    if os.name == "posix" and os.geteuid() != 0:  # permissions bind this user: the real thing
        locked.chmod(0)
    else:  # root reads anything: make opening it fail as it would for a user
        real_open = open

        def deny(path: object, *args: object, **kwargs: object) -> object:
            if Path(str(path)) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr("kerasprune.cli.models.open", deny, raising=False)
    try:
        assert _error(capsys, "summary", locked) == f"cannot read {locked}: Permission denied"
    finally:
        locked.chmod(0o600)


def test_custom_objects(custom: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(capsys, "summary", custom)
    assert message.startswith(f"{custom} uses custom object 'kp_cli_test_saved>Twice', not "
                              "registered in this process: pass --custom-objects MODULE")
    message = _error(capsys, "summary", custom, "--custom-objects", "kp_no_such_module")
    assert message == ("--custom-objects kp_no_such_module: cannot import it: "
                       "ModuleNotFoundError: No module named 'kp_no_such_module'")
    broken = custom.parent / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    assert _error(capsys, "summary", custom, "--custom-objects", broken) == (
        f"--custom-objects {broken}: importing it failed: RuntimeError: boom")
    # by file, and by module name from the current directory, as python -m finds modules
    by_file = run_in_process(capsys, "summary", custom, "--custom-objects",
                             custom.parent / "kp_cli_custom_layers.py", "--json")
    assert by_file.code == 0, by_file.err
    assert [r["name"] for r in by_file.json()["layers"]] == ["d", "twice"]
    keras.saving.get_custom_objects().pop("kp_cli_test_saved>Twice", None)
    monkeypatch.chdir(custom.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    by_name = run_in_process(capsys, "summary", custom, "--custom-objects",
                             "kp_cli_custom_layers", "--json")
    assert by_name.code == 0, by_name.err
    sys.modules.pop("kp_cli_custom_layers", None)


def test_lambda_needs_unsafe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                              keras.layers.Lambda(lambda x: x * 2, name="double")])
    model.save(tmp_path / "lambda.keras")
    assert "holds Python code (a Lambda layer's function)" in _error(
        capsys, "summary", tmp_path / "lambda.keras")
    run = run_in_process(capsys, "summary", tmp_path / "lambda.keras", "--unsafe", "--json")
    assert run.code == 0, run.err
    assert [(r["name"], r["kind"]) for r in run.json()["layers"]] == [("d", "Dense"),
                                                                      ("double", "Lambda")]


def test_unknown_layer_and_bad_neurons(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(capsys, "prune", files.model, "--layer", "fc2", "--neurons", "0",
                  "--dry-run") == "no layer named 'fc2' in the model; did you mean 'fc'?"
    assert "out of range for 'fc', which has 12 neurons" in _error(
        capsys, "prune", files.model, "--layer", "fc", "--neurons", "0,12", "--dry-run")
    assert "--allow-output-change" in _error(capsys, "prune", files.model, "--layer", "out",
                                             "--neurons", "0", "--dry-run")
    assert "no layer named 'nope'" in _error(capsys, "apoz", files.model, "--data",
                                             files.data, "--layers", "nope")


def test_usage_errors(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(capsys, "prune", files.model, "--dry-run", code=EXIT_USAGE) == (
        "which neurons to delete? give --layer/--neurons, --from or --flops/--params/--latency")
    assert _error(capsys, "prune", files.model, "--layer", "fc", "--dry-run",
                  code=EXIT_USAGE).startswith("give one --neurons for each --layer")
    assert _error(capsys, "prune", files.model, "--layer", "fc", "--neurons", "1",
                  code=EXIT_USAGE) == "where to? give -o OUT.keras, or --dry-run to write nothing"
    assert _error(capsys, "prune", files.model, "--layer", "fc", "--neurons", "1",
                  "--from", "x.json", "--dry-run", code=EXIT_USAGE).startswith(
        "choose one way of selecting")
    assert "requires cutoff" in _error(capsys, "apoz", files.model, "--data", files.data,
                                       "--rule", "absolute", code=EXIT_USAGE)
    with pytest.raises(SystemExit) as exit_:  # argparse's own: usage and one error line
        run_in_process(capsys, "prune", files.model, "--neurons", "1,x")
    assert exit_.value.code == EXIT_USAGE
    assert "expected comma-separated integer indices such as 0,5,7, got '1,x'" in (
        capsys.readouterr().err)


def test_outputs_are_never_overwritten_without_force(
        files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prune = ["prune", files.model, "--layer", "fc", "--neurons", "1"]
    assert "is an input of this command" in _error(capsys, *prune, "-o", files.model)
    assert "is an input of this command" in _error(capsys, *prune, "-o", files.model,
                                                   "--force")
    out = tmp_path / "out.keras"
    out.write_bytes(b"old")
    assert _error(capsys, *prune, "-o", out) == f"-o {out} exists; pass --force to overwrite it"
    assert out.read_bytes() == b"old"
    assert "must end in .keras" in _error(capsys, *prune, "-o", tmp_path / "out.h5")
    assert "does not exist" in _error(capsys, *prune, "-o", tmp_path / "no" / "out.keras")
    assert run_in_process(capsys, *prune, "-o", out, "--force", "-q").code == 0
    assert keras.saving.load_model(out).get_layer("fc").units == 11
    plot = tmp_path / "apoz.png"
    plot.write_bytes(b"old")
    assert _error(capsys, "apoz", files.model, "--data", files.data, "--plot", plot) == (
        f"--plot {plot} exists; pass --force to overwrite it")
    assert "must end in .png, .svg, .pdf" in _error(capsys, "apoz", files.model, "--data",
                                                    files.data, "--plot", tmp_path / "a.gif")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("old")
    assert _error(capsys, "trim", files.model, "--train", files.data, "--val", files.data,
                  "-o", tmp_path / "t.keras", "--report", report) == (
        f"--report {report / 'report.md'} exists; pass --force to overwrite it")
    assert not (tmp_path / "t.keras").exists()


def test_data_that_does_not_fit(files: Files, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 9, 9, 1), "float32"), y=np.zeros(4, "int64"))
    name = keras.saving.load_model(files.model).inputs[0].name  # numbered per process
    assert _error(capsys, "apoz", files.model, "--data", wrong) == (
        f"--data {wrong}: array 'x' holds samples of shape (9, 9, 1), but model 'tiny' takes "
        f"(8, 8, 1) at input '{name}'")
    no_x = tmp_path / "no_x.npz"
    np.savez(no_x, inputs=np.zeros((4, 8, 8, 1)))
    assert "has no array 'x' (it has ['inputs'])" in _error(capsys, "apoz", files.model,
                                                            "--data", no_x)
    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, x=np.zeros((4, 8, 8, 1), "float32"))
    assert _error(capsys, "trim", files.model, "--train", no_y, "--val", files.data, "-o",
                  tmp_path / "t.keras").startswith(f"--train {no_y}: has no labels")
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, x=np.zeros((4, 8, 8, 1), "float32"), y=np.zeros(3, "int64"))
    assert "different numbers of samples: [3, 4]" in _error(
        capsys, "trim", files.model, "--train", uneven, "--val", files.data, "-o",
        tmp_path / "t.keras")
    assert "no such file or directory" in _error(capsys, "apoz", files.model, "--data",
                                                 tmp_path / "none.npz")
    text = tmp_path / "data.csv"
    text.write_text("1,2")
    assert "not a .npz file" in _error(capsys, "apoz", files.model, "--data", text)
    assert _error(capsys, "apoz", files.model, "--data", "mnist") == (
        "--data mnist: MNIST images are 28x28 with one channel, but model 'tiny' takes "
        "(8, 8, 1)")
    assert "unknown MNIST split 'dev'" in _error(capsys, "apoz", files.model, "--data",
                                                 "mnist:dev")
    assert not (tmp_path / "t.keras").exists()


def test_uncompiled_model_for_trim(tmp_path: Path, files: Files,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import residual_model

    residual_model(compiled=False).save(tmp_path / "raw.keras")
    assert "was saved without compile settings" in _error(
        capsys, "trim", tmp_path / "raw.keras", "--train", files.data, "--val", files.data,
        "-o", tmp_path / "t.keras")


def test_missing_matplotlib(files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert _error(capsys, "apoz", files.model, "--data", files.data, "--plot",
                  tmp_path / "a.png") == ("--plot draws with matplotlib, which is not "
                                          "installed: pip install 'kerasprune[plot]'")
    assert "pip install 'kerasprune[plot]'" in _error(
        capsys, "trim", files.model, "--train", files.data, "--val", files.data, "-o",
        tmp_path / "t.keras", "--report", tmp_path / "r")


def test_debug_shows_the_traceback(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(capsys, "prune", files.model, "--layer", "fc2", "--neurons", "0",
                         "--dry-run", "--debug")
    assert run.code == EXIT_ERROR
    assert "Traceback (most recent call last)" in run.err and "PruneError" in run.err
    assert run.err.splitlines()[-1].startswith("kerasprune: error: no layer named 'fc2'")


def test_interrupt_and_backend(files: Files, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kerasprune.cli.commands import COMMANDS

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(COMMANDS["summary"], "run", interrupted)
    run = run_in_process(capsys, "summary", files.model)
    assert run.code == 130 and run.err == "kerasprune: error: interrupted\n"
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    assert _error(capsys, "--backend", other, "summary", files.model) == (
        f"--backend {other}: Keras is already loaded with the {keras.backend.backend()} "
        "backend in this process")
