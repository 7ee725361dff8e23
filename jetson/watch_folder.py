#!/usr/bin/env python3
"""Watch an inbox folder and enhance each new DICOM file in this process, each model loaded once.

Meant for the bedside service (jetson/medclear-enhance.service). A file is taken once it has
stopped growing (a DICOM receiver may still be writing it) and enhanced exactly as
``python -m runtime.enhance FILE -o OUTPUT --overwrite ...`` would (same flags, same outputs),
but by long-lived backends: the model (or TensorRT engine) is opened once, at start, and kept;
without a model named, a modality's own model (MR's) opens with its first file and is kept
too (if it cannot open, only that modality's files wait in the inbox). Each input then moves to
the done folder, or to the failed folder with the enhancer's message beside it. The log
(systemd's journal) never names files: inputs appear as short hashes, since file names often
carry patient details.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

LOG = logging.getLogger("medclear.watch")
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".filepart")
UNAVAILABLE_BACKOFF_S = 60.0  # wait this long before retrying when the model cannot be opened


def token(path: Path) -> str:
    """A short stable stand-in for a file name in the log."""
    return "file#" + hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:10]


def candidates(inbox: Path) -> List[Path]:
    """Regular, non-hidden, non-partial files directly in INBOX, oldest first."""
    files = [
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(PARTIAL_SUFFIXES)
    ]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


class SettleTracker:
    """Report files whose size and mtime stayed the same for at least SETTLE seconds."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._seen: Dict[Path, Tuple[Tuple[int, float], float]] = {}

    def settled(self, files: Sequence[Path], now: float) -> List[Path]:
        ready, seen = [], {}
        for path in files:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            signature = (stat.st_size, stat.st_mtime)
            previous = self._seen.get(path)
            since = previous[1] if previous and previous[0] == signature else now
            seen[path] = (signature, since)
            if now - since >= self.settle_s:
                ready.append(path)
        self._seen = seen
        return ready


def move_aside(path: Path, folder: Path) -> Path:
    """Move PATH into FOLDER without overwriting an earlier file of the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.name}.{n}"
        n += 1
    shutil.move(str(path), str(target))
    return target


class EnhancerUnavailable(RuntimeError):
    """The enhancer cannot work at all (bad arguments, or the model/backend cannot be opened)."""


class ModelUnavailable(EnhancerUnavailable):
    """One file's model (its modality's own, or none installed for it) cannot be opened: that
    file waits in the inbox while files for the other models go on."""


class _Lines:
    """A runtime.enhance reporter that keeps the per-file lines instead of printing them."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def file(self, status: str, source: object, message: str) -> None:
        from runtime.report import file_line

        self.lines.append(file_line(status, source, message))

    def step(self) -> None:
        pass


class Enhancer:
    """Enhances files in this process, as runtime.enhance would, each model opened on first use
    and kept open (one model, or with no model named, each modality's model: runtime/routing.py).
    Its options are runtime.enhance's, checked by its own parser."""

    def __init__(self, args: argparse.Namespace) -> None:
        from runtime import enhance
        from runtime.routing import routes_by_modality

        self.args = args
        parser = enhance.build_parser()
        self.cli = parser.parse_args(["INPUT", *self.cli_args()])  # exits 2 on a bad option
        problem = enhance.usage_problem(self.cli)  # the CLI's own checks of option values
        if problem:
            parser.error(problem)
        self._routed = routes_by_modality(self.cli.task, self.cli.model, remote=self.cli.url is not None)
        self._served: Dict[Any, Tuple[Any, Any]] = {}  # model (None: the run's default) -> (backend, settings)
        # models that failed to open or run -> (the error, when): not reopened for UNAVAILABLE_BACKOFF_S
        self._unopened: Dict[Any, Tuple[EnhancerUnavailable, float]] = {}

    def cli_args(self) -> List[str]:
        """The runtime.enhance options this watcher applies (after the input files)."""
        a = self.args
        cmd = ["-o", str(a.output), "--overwrite"]
        if a.model:
            cmd += ["--model", str(a.model)]
        if a.backend:
            cmd += ["--backend", a.backend]
        if a.format:
            cmd += ["--format", a.format]
        return cmd + list(a.enhance_arg)

    def command(self, files: Sequence[Path]) -> List[str]:
        """The equivalent ``python -m runtime.enhance`` command line, for plans and docs."""
        return ["python", "-m", "runtime.enhance", *map(str, files), *self.cli_args()]

    def open(self) -> None:
        """Open the run's model now, so a model that cannot open is reported before any file
        (EnhancerUnavailable, reason in failed/enhancer-error.log); a routed run opens its task's
        default model now where one is installed, and each modality's own model (MR's) as its first
        file arrives; a --modality-model's model opens now too, so that a typo shows at start."""
        from runtime.backends.select import DEFAULT_TASK, ModelNotFoundError
        from runtime.routing import given_model, routed_model

        for _, model in self.cli.modality_model or []:
            self._model(given_model(model))  # as file_groups names it, so the cache finds it again
        if not self._routed:
            self._model(self.cli.model)
            return
        task = self.cli.task or DEFAULT_TASK
        try:
            default = routed_model(None, task)
        except ModelNotFoundError as error:
            if task == DEFAULT_TASK:  # every modality without its own denoiser needs the default one
                raise self._unavailable("the model could not be opened", error) from None
            return  # e.g. only the MR x2 model installed: nothing to open until a file needs it
        self._model(default)

    def _model(self, model: Any) -> Tuple[Any, Any]:
        """(backend, settings) of ``model``, opened once; EnhancerUnavailable if it cannot be."""
        if model in self._served:
            return self._served[model]
        if model in self._unopened:
            error, failed_at = self._unopened[model]
            if time.monotonic() < failed_at + UNAVAILABLE_BACKOFF_S:
                raise error
            del self._unopened[model]
        from runtime.backends import BackendError
        from runtime.enhance import Settings, bounded_threads
        from runtime.pipeline import open_model

        cli = self.cli
        try:
            backend = open_model(model, cli.backend, threads=bounded_threads(cli.threads),
                                 cuda_graphs=cli.cuda_graphs, task=cli.task)
        except BackendError as error:
            raise self._remember_unopened(model, self._unavailable("the model could not be opened", error)) from None
        try:  # checks --strength against the model before any file, as the CLI does
            self._served[model] = (backend, Settings.from_cli(cli, backend))
        except ValueError as error:
            backend.close()
            unsuited = self._unavailable("--strength does not suit the model", error)
            raise self._remember_unopened(model, unsuited) from None
        LOG.info("model opened once for this process: %s on %s", Path(str(backend.source)).name, backend.describe())
        return self._served[model]

    def _remember_unopened(self, model: Any, error: EnhancerUnavailable) -> EnhancerUnavailable:
        """``error``, kept for ``model`` so that it is not tried again for UNAVAILABLE_BACKOFF_S."""
        self._unopened[model] = (error, time.monotonic())
        return error

    def _unavailable(self, what: str, error: Exception) -> EnhancerUnavailable:
        """The error to raise, its reason written to failed/enhancer-error.log (not the journal)."""
        report = self.args.failed / "enhancer-error.log"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(f"medclear: error: {error}\n")
        return EnhancerUnavailable(f"{what}; inputs stay in the inbox; the reason is in {report}")

    def close(self) -> None:
        """Free the backends (after a failure and at exit)."""
        for backend, _ in self._served.values():
            backend.close()
        self._served.clear()

    def enhance_one(self, path: Path) -> Tuple[bool, List[str]]:
        """Enhance one file with the CLI's own per-file loop (outputs, skips and messages exactly
        as ``python -m runtime.enhance`` makes them); (succeeded, its lines about the file)."""
        from runtime import enhance
        from runtime.backends import BackendError
        from runtime.inputs import discover

        jobs, errors = discover([path], exclude=self.args.output)
        reporter = _Lines()
        for source, reason in errors:
            reporter.file("FAILED", source, reason)
        try:
            groups = enhance.file_groups(self.cli, jobs, remote=self.cli.url is not None)
        except BackendError as error:  # no model installed for this file's modality or the task
            raise ModelUnavailable(str(self._unavailable("the model could not be opened", error))) from None
        tally = enhance.Tally()
        for model, group in groups:
            try:
                backend, settings = self._model(model)
            except EnhancerUnavailable as error:
                raise ModelUnavailable(str(error)) from None
            try:
                enhance.run_jobs(group, backend, settings, reporter, tally)
            except enhance.BackendUnusable as error:  # this model stopped working: reopened after its back-off
                self._served.pop(model)[0].close()
                stopped = self._remember_unopened(model, self._unavailable("the model stopped working", error))
                raise ModelUnavailable(str(stopped)) from None
        return not errors and tally.failed == 0, reporter.lines

    def process(self, files: Sequence[Path]) -> Tuple[int, int, int]:
        """Enhance FILES; returns (succeeded, failed, waiting). EnhancerUnavailable (the run's
        model cannot open) leaves them all in the inbox; a file whose model cannot open or has
        stopped working waits there, counted as waiting, while files for other models go on."""
        self.open()
        start = time.monotonic()
        ok = bad = 0
        waiting: List[Path] = []
        reason = ""
        for path in files:
            try:
                succeeded, lines = self.enhance_one(path)
            except ModelUnavailable as error:
                waiting.append(path)
                reason = str(error)
                continue
            if succeeded:
                move_aside(path, self.args.done)
                ok += 1
            else:
                self._fail(path, lines)
                bad += 1
        LOG.info("enhanced %d file(s), %d failed, in %.1f s", ok, bad, time.monotonic() - start)
        if waiting:  # an error when their model was tried in this batch; while it backs off, quietly
            tried = any(failed_at >= start for _, failed_at in self._unopened.values())
            level = logging.ERROR if tried else logging.DEBUG
            tokens = " ".join(map(token, waiting[:8]))
            LOG.log(level, "%d file(s) wait in the inbox (%s): %s", len(waiting), tokens, reason)
        return ok, bad, len(waiting)

    def _fail(self, path: Path, lines: List[str]) -> None:
        target = move_aside(path, self.args.failed)
        # The enhancer's message names the file, so it stays beside the file, not in the journal.
        target.with_name(target.name + ".log").write_text("\n".join(lines) + "\n")
        LOG.error("%s failed; moved to the failed folder with a .log beside it", token(path))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="jetson/watch_folder.py",
        description=__doc__.split("\n\n")[0],
        epilog="Inputs are never deleted: they end up in --done or --failed.",
    )
    parser.add_argument("--input", type=Path, required=True, help="inbox folder to watch")
    parser.add_argument("--output", type=Path, required=True, help="folder for enhanced files (-o)")
    parser.add_argument("--done", type=Path, help="where processed inputs go (default: INPUT/../done)")
    parser.add_argument("--failed", type=Path, help="where failed inputs go (default: INPUT/../failed)")
    parser.add_argument("--model", type=Path, help="model file passed as --model (ONNX or engine)")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], help="passed as --backend")
    parser.add_argument("--format", choices=["dicom", "png", "npy"], help="passed as --format")
    parser.add_argument(
        "--enhance-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra runtime.enhance option (repeatable), e.g. --enhance-arg=--threads=4 or "
        "--enhance-arg=--strength=0.8",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between scans (default: 2)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds a file must stay unchanged (default: 5)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=16, help="files taken per scan before checking for a stop (default: 16)"
    )
    parser.add_argument("--once", action="store_true", help="process what is there now and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (lines starting 'PLAN: ') and change nothing"
    )
    args = parser.parse_args(argv)
    args.done = args.done or args.input.parent / "done"
    args.failed = args.failed or args.input.parent / "failed"
    if args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    if args.dry_run and not args.input.is_dir():
        parser.error(f"{args.input}: input folder does not exist")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    enhancer = Enhancer(args)
    if args.dry_run:
        files = candidates(args.input)
        for i in range(0, len(files), args.max_batch):
            batch = files[i : i + args.max_batch]
            print("PLAN: enhance in this process (each model loaded once), as: " + shlex.join(enhancer.command(batch)))
            print(f"PLAN: move {len(batch)} input(s) to {args.done} (or {args.failed} on failure)")
        if not files:
            print(f"PLAN: nothing to do; {args.input} has no files")
        return 0

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        LOG.info("signal %d: stopping after the current batch", signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for folder in (args.input, args.output, args.done, args.failed):
        folder.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")  # pydicom's warnings can quote element values
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    tracker = SettleTracker(0.0 if args.once else args.settle)
    LOG.info("watching the inbox every %.1f s (settle %.1f s)", args.interval, args.settle)
    total_ok = total_bad = 0
    unavailable = False
    while not stopping:
        ready = tracker.settled(candidates(args.input), time.monotonic())
        pause = args.interval
        try:
            for i in range(0, len(ready), args.max_batch):
                ok, bad, waiting = enhancer.process(ready[i : i + args.max_batch])
                total_ok, total_bad = total_ok + ok, total_bad + bad
                unavailable = unavailable or waiting > 0  # their model is retried after its back-off
                if stopping:
                    break
        except EnhancerUnavailable as error:
            LOG.error("%s", error)
            unavailable = True
            pause = max(args.interval, UNAVAILABLE_BACKOFF_S)
        if args.once:
            break
        wake = time.monotonic() + pause
        while not stopping and time.monotonic() < wake:
            time.sleep(min(0.5, pause))
    enhancer.close()
    LOG.info("stopped: %d enhanced, %d failed", total_ok, total_bad)
    return 1 if args.once and (total_bad or unavailable) else 0


if __name__ == "__main__":
    sys.exit(main())
