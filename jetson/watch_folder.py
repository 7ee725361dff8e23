#!/usr/bin/env python3
"""Watch an inbox folder and enhance each new DICOM file with ``python -m runtime.enhance``.

Meant for the bedside service (jetson/medclear-enhance.service). A file is taken once it has
stopped growing (a DICOM receiver may still be writing it), enhanced in batches so the model
is loaded once per batch, then moved to the done folder; a file that fails is moved to the
failed folder with the enhancer's output beside it. The log (systemd's journal) never names
files: inputs appear as short hashes, since file names often carry patient details.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

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
    """runtime.enhance failed as a whole (model, backend or arguments), not on one file."""


class Enhancer:
    """Runs the enhancement CLI on batches of files and files each input by its outcome."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def command(self, files: Sequence[Path]) -> List[str]:
        a = self.args
        cmd = [a.python, "-m", a.enhance_module, *map(str, files), "-o", str(a.output), "--overwrite"]
        if a.model:
            cmd += ["--model", str(a.model)]
        if a.backend:
            cmd += ["--backend", a.backend]
        if a.format:
            cmd += ["--format", a.format]
        return cmd + list(a.enhance_arg)

    def _run(self, files: Sequence[Path]) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(files), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )

    def process(self, files: Sequence[Path]) -> Tuple[int, int]:
        """Enhance FILES; returns (succeeded, failed). A failed batch is retried file by file.

        EnhancerUnavailable when the enhancer itself cannot work (exit 2: bad arguments or the
        model/backend could not be opened; 130: interrupted): the inputs stay in the inbox.
        """
        start = time.monotonic()
        result = self._run(files)
        if result.returncode not in (0, 1):
            report = self.args.failed / "enhancer-error.log"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_bytes(result.stdout or b"")
            raise EnhancerUnavailable(
                f"the enhancer could not run (exit {result.returncode}); inputs stay in the inbox;"
                f" its message is in {report}"
            )
        if result.returncode == 0:
            for path in files:
                move_aside(path, self.args.done)
            LOG.info("enhanced %d file(s) in %.1f s", len(files), time.monotonic() - start)
            return len(files), 0
        if len(files) == 1:
            self._fail(files[0], result)
            return 0, 1
        LOG.warning("batch of %d failed (exit %d); retrying one by one", len(files), result.returncode)
        ok = bad = 0
        for path in files:
            s, f = self.process([path])
            ok, bad = ok + s, bad + f
        return ok, bad

    def _fail(self, path: Path, result: subprocess.CompletedProcess) -> None:
        target = move_aside(path, self.args.failed)
        # The enhancer's message names the file, so it stays beside the file, not in the journal.
        target.with_name(target.name + ".log").write_bytes(result.stdout or b"")
        LOG.error(
            "%s failed (exit %d); moved to the failed folder with a .log beside it",
            token(path),
            result.returncode,
        )


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
        help="extra argument for runtime.enhance (repeatable), e.g. --enhance-arg=--threads=4",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between scans (default: 2)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds a file must stay unchanged (default: 5)"
    )
    parser.add_argument("--max-batch", type=int, default=16, help="files per enhance call (default: 16)")
    parser.add_argument("--once", action="store_true", help="process what is there now and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (lines starting 'PLAN: ') and change nothing"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the enhancer")
    parser.add_argument(
        "--enhance-module", default="runtime.enhance", help="module run with -m (default: runtime.enhance)"
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
            print("PLAN: " + shlex.join(enhancer.command(batch)))
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
    tracker = SettleTracker(0.0 if args.once else args.settle)
    LOG.info("watching the inbox every %.1f s (settle %.1f s)", args.interval, args.settle)
    total_ok = total_bad = 0
    unavailable = False
    while not stopping:
        ready = tracker.settled(candidates(args.input), time.monotonic())
        pause = args.interval
        try:
            for i in range(0, len(ready), args.max_batch):
                ok, bad = enhancer.process(ready[i : i + args.max_batch])
                total_ok, total_bad = total_ok + ok, total_bad + bad
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
    LOG.info("stopped: %d enhanced, %d failed", total_ok, total_bad)
    return 1 if args.once and (total_bad or unavailable) else 0


if __name__ == "__main__":
    sys.exit(main())
