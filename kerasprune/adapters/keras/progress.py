"""What :func:`kerasprune.trim` shows while a round runs: the phase, its progress, the time
spent on the round and an estimate of the time left in it.

A round is a sequence of phases (measuring APoZ, fine-tuning epoch by epoch, evaluating),
each a known or unknown number of steps (batches). The time left is the steps left in each
phase times that phase's seconds per step: measured in this round once the phase has run a
step, else taken from the last round that ran it (rounds get faster as the model shrinks, so
the estimate errs long). Until a phase has been timed once the estimate is unknown, and is
shown as such.

On a terminal or in a notebook one status line is kept up to date in place (at most ten
times a second); in a log (output that is not a terminal) a line is printed when a phase
begins, so the log stays readable. ``verbose=0`` shows nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import keras

__all__ = ["KerasHook", "RoundProgress", "clock"]

_INTERVAL = 0.1
"""Seconds between two redraws of the status line."""
_BAR = 20
"""Width of the progress bar, in characters."""


def clock(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` for an unknown time."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _dynamic(stream: TextIO) -> bool:
    """Whether ``stream`` can redraw a line in place (a terminal or a notebook)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


class RoundProgress:
    """The progress of one round of a trim run, shown as it goes.

    Parameters
    ----------
    verbose
        0: nothing; 1: a status line (redrawn in place on a terminal, a line per phase in a
        log); 2: a line per phase (Keras prints its own lines as well).
    max_rounds
        Shown as ``round r/max_rounds`` when given.
    stream
        Where to write (``sys.stdout`` when ``None``, looked up at each write).
    unit
        What a round is called in the status line (``"step"`` for :func:`kerasprune.prune`).
    """

    def __init__(self, verbose: int, max_rounds: int | None,
                 stream: TextIO | None = None, unit: str = "round") -> None:
        self.verbose = verbose
        self.unit = unit
        self.max_rounds = max_rounds
        self._stream = stream
        self.rates: dict[str, float] = {}
        self.round = 0
        self._plan: dict[str, int | None] = {}
        self._round_start = self._phase_start = time.monotonic()
        self._phase = ""
        self._label = ""
        self._steps: int | None = None
        self._done = 0
        self._first: tuple[float, int] | None = None
        self._drawn = 0.0
        self._width = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def phase(self) -> str:
        """What the round is doing now (its label), for messages."""
        return self._label

    # ---- the round's plan and its phases -----------------------------------------------

    def begin_round(self, r: int, plan: Mapping[str, int | None]) -> None:
        """Round ``r`` begins; ``plan`` is ``{phase: steps}`` in order (``None``: unknown)."""
        self.round = r
        self._plan = dict(plan)
        self._round_start = time.monotonic()
        self._phase = self._label = ""

    def begin_phase(self, phase: str, label: str, steps: int | None) -> None:
        """A phase begins (``phase`` is a key of the plan, or a phase outside it)."""
        self._end_phase()
        self._phase, self._label, self._steps, self._done = phase, label, steps, 0
        self._phase_start = time.monotonic()
        self._first = None
        if phase in self._plan:
            self._plan[phase] = _less(self._plan[phase], steps)
        if self.verbose and not self._dynamic():
            print(f"  {self.unit} {self._round_text()}: {label} ({clock(self.elapsed())} "
                  f"into the {self.unit}, {self._left_text()})", file=self.stream, flush=True)
        else:
            self._draw(force=True)

    def note(self, label: str) -> None:
        """A short step outside the plan (no progress, no line of its own in a log)."""
        self._end_phase()
        self._phase, self._label, self._steps, self._done = "", label, None, 0
        self._first = None
        self._draw(force=True)

    def step(self, done: int) -> None:
        """``done`` steps of the current phase are done."""
        if self._first is None and done >= 1:
            self._first = (time.monotonic(), done)
        self._done = done
        self._draw()

    def update(self, step: int) -> None:
        """As :meth:`step` (so the APoZ pass can report to it)."""
        self.step(step)

    def finish(self, step: int) -> None:
        """The APoZ pass ran ``step`` batches."""
        self.step(step)

    def end_round(self) -> None:
        """The round is over: record the last phase's rate, clear the status line."""
        self._end_phase()
        self._phase = self._label = ""
        self.clear()

    def clear(self) -> None:
        """Erase the status line (before a line is printed)."""
        if self._width and self._dynamic():
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0

    def _end_phase(self) -> None:
        if self._phase and self._done:
            self.rates[self._phase] = (time.monotonic() - self._phase_start) / self._done

    # ---- the estimate ------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the round began."""
        return time.monotonic() - self._round_start

    def left(self) -> float | None:
        """Estimated seconds left in the round (``None`` if not known yet)."""
        total = 0.0
        if self._phase:
            rate = self._rate(self._phase)
            if self._steps is None or rate is None:
                return None
            total += max(self._steps - self._done, 0) * rate
        for phase, steps in self._plan.items():
            if not steps:
                continue
            rate = self._rate(phase)
            if rate is None:
                return None
            total += steps * rate
        return total

    def _rate(self, phase: str) -> float | None:
        """Seconds per step of ``phase``: as it runs now, else as it ran last.

        As it runs, the steps up to the first report are left out once more are done: they
        carry the compilation of the round's new model (Keras' own progress bar leaves out
        its first step for the same reason)."""
        if phase == self._phase and self._done:
            if self._first is not None and self._done > self._first[1]:
                at, done = self._first
                return (time.monotonic() - at) / (self._done - done)
            return (time.monotonic() - self._phase_start) / self._done
        return self.rates.get(phase)

    # ---- drawing -----------------------------------------------------------------------

    def _dynamic(self) -> bool:
        return self.verbose == 1 and _dynamic(self.stream)

    def _round_text(self) -> str:
        return f"{self.round}/{self.max_rounds}" if self.max_rounds else str(self.round)

    def _left_text(self) -> str:
        left = self.left()
        return "estimating the time left" if left is None else f"about {clock(left)} left"

    def _draw(self, force: bool = False) -> None:
        if not self._dynamic() or not self._label:
            return
        now = time.monotonic()
        if not force and now - self._drawn < _INTERVAL:
            return
        self._drawn = now
        if self._steps:
            filled = min(_BAR, _BAR * self._done // self._steps)
            bar = (f" [{'=' * filled}{'.' * (_BAR - filled)}] {self._done}/{self._steps}")
        else:
            bar = f" {self._done}" if self._done else ""
        line = (f"{self.unit} {self._round_text()} | {self._label}{bar} | "
                f"{clock(self.elapsed())} elapsed, {self._left_text()}")
        pad = max(self._width - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)


def _less(planned: int | None, steps: int | None) -> int | None:
    """What is left of a planned phase once ``steps`` of it have begun (``None``: unknown)."""
    if planned is None or steps is None:
        return None
    return max(planned - steps, 0)


class KerasHook(keras.callbacks.Callback):  # type: ignore[misc]
    """A Keras callback that reports ``fit``/``evaluate`` batches to a :class:`RoundProgress`
    and counts the epochs that ran (epochs numbered from ``epochs`` on are recovery epochs).

    Parameters
    ----------
    progress
        Where to report.
    epochs
        The round's planned fine-tuning epochs; later ones are recovery epochs.
    recover_epochs
        The most recovery epochs the round may run.
    steps
        Training steps per epoch, if known.
    eval_steps
        Evaluation steps, if known.
    """

    async_safe = True
    """Keras may call the batch hooks from a worker thread, so ``fit`` keeps dispatching
    steps without waiting for each one's logs (they only count and draw)."""

    def __init__(self, progress: RoundProgress, epochs: int, recover_epochs: int,
                 steps: int | None, eval_steps: int | None) -> None:
        super().__init__()
        self.progress = progress
        self.planned = epochs
        self.recover = recover_epochs
        self.steps = steps
        self.eval_steps = eval_steps
        self.epochs_run = 0
        self.recovery_run = 0
        self._fitting = False

    def on_train_begin(self, logs: Any = None) -> None:
        self._fitting = True

    def on_train_end(self, logs: Any = None) -> None:
        self._fitting = False

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch < self.planned:
            label, phase = f"fine-tuning epoch {epoch + 1}/{self.planned}", "fit"
        else:
            label = f"recovery epoch {epoch - self.planned + 1} of at most {self.recover}"
            phase = "recover"
        self.progress.begin_phase(phase, label, self.steps)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch < self.planned:
            self.epochs_run += 1
        else:
            self.recovery_run += 1

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.progress.step(batch + 1)

    def on_test_begin(self, logs: Any = None) -> None:
        if not self._fitting:
            self.progress.begin_phase("evaluate", "evaluating", self.eval_steps)

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        if not self._fitting:
            self.progress.step(batch + 1)
