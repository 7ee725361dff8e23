"""python -m benchmarks.reader_study {prepare,serve,analyze}: a blinded reader study in a browser."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import warnings
from pathlib import Path

from benchmarks.reader_study.arms import DEFAULT_ARMS, ab_pairs, check_arms, parse_arm
from benchmarks.reader_study.manifest import StudyError, load_study
from runtime.logtext import cause, path_error

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
A blinded reader study: radiologists score images 1-5 in a browser without knowing which
arm (original, medclear, a classical baseline) each image is. docs/READER_STUDY.md.

  prepare  render DICOM cases x arms to windowed, anonymous PNGs and write STUDY/manifest.json
  serve    the scoring web app for readers (and an admin progress page)
  analyze  CSV export and a report: means with CIs, Wilcoxon tests, ICC(2,k), weighted kappa,
           A/B preferences
"""

PREPARE_EPILOG = """\
arms (--arm, repeatable; default: original, medclear, nlm):
  [LABEL=]KIND[:KEY=VALUE,...]   KIND is one of
    original                      the file's own values
    medclear[:strength=S,model=F] the runtime's inference path (default model unless model=F:
                                  --model, else the case's modality's, e.g. MR's denoiser;
                                  strength 0-4, default 1)
    nlm[:h=H]                     non-local means (trainer.baselines), h a multiple of the
                                  estimated noise sigma (default 0.8)
  e.g. --arm original --arm medclear --arm low=medclear:strength=0.5 --arm nlm
  LABEL names the arm in the report only; readers never see it.

Each case shows its middle frame. CT gets soft-tissue (W400/L40) and lung (W1500/L-600)
presets; other modalities the file's VOI window, else the 0.5-99.5 percentiles. Images are
written under random ids without metadata; the seed fixes every reader's order.
"""

SERVE_EPILOG = """\
Listens on 127.0.0.1 (this machine only) unless --host is given. Readers sign in by name (a new
reader; the page shows a personal code to continue later or elsewhere) or with a code. Off
loopback, name sign-in is off by default: invite readers on the admin page (its URL, with the
admin token, is printed at start) and hand each their code. Answers are saved on every click in
STUDY/answers.sqlite.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reader_study", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", help="render cases x arms and write the study",
                                  description="Render DICOM cases x arms into a study folder.",
                                  epilog=PREPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    prepare.add_argument("cases", nargs="+", type=Path, metavar="CASES", help="DICOM files, folders or DICOMDIRs")
    prepare.add_argument("-o", "--out", type=Path, required=True, metavar="STUDY", help="the study folder")
    prepare.add_argument("--arm", dest="arms", action="append", type=parse_arm, metavar="SPEC",
                         help="an arm to compare (repeatable; see below)")
    prepare.add_argument("--ab", default="all", metavar="all|none|LABEL",
                         help="A/B pairs: every pair of arms (default), none, or each arm against LABEL")
    prepare.add_argument("--seed", type=int, help="randomisation seed (default: drawn now, kept in the manifest)")
    prepare.add_argument("--model", type=Path,
                         help="the default model for medclear and NLM arms (.onnx/.engine; default: each case's "
                              "modality's model, e.g. MR's denoiser)")
    prepare.add_argument("--overwrite", action="store_true", help="replace a prepared study that has no answers")

    serve = commands.add_parser("serve", help="run the scoring web app",
                                description="Serve a prepared study to readers' browsers.",
                                epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("study", type=Path, metavar="STUDY", help="the study folder made by prepare")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1; e.g. 0.0.0.0 for the network)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    signin = serve.add_mutually_exclusive_group()
    signin.add_argument("--name-signin", dest="name_signin", action="store_true", default=None,
                        help="let new readers sign in by name (default on loopback only)")
    signin.add_argument("--token-only", dest="name_signin", action="store_false",
                        help="readers sign in only with codes issued on the admin page")
    serve.add_argument("--certfile", type=Path, help="TLS certificate (PEM) to serve https")
    serve.add_argument("--keyfile", type=Path, help="TLS private key (PEM)")

    analysis = commands.add_parser("analyze", help="export answers and write the report",
                                   description="CSV export and statistics report of a study's answers.")
    analysis.add_argument("study", type=Path, metavar="STUDY", help="the study folder made by prepare")
    analysis.add_argument("-o", "--out", type=Path, help="output folder (default: STUDY/analysis)")
    return parser


def _prepare(args: argparse.Namespace) -> int:
    from benchmarks.reader_study.prepare import prepare_study

    try:
        arms = check_arms(args.arms or [parse_arm(spec) for spec in DEFAULT_ARMS])
        pairs = ab_pairs(arms, args.ab)
    except ValueError as error:
        print(f"reader study: {cause(error)}", file=sys.stderr)
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    study = prepare_study(args.cases, args.out, arms, seed=seed, model=args.model, overwrite=args.overwrite,
                          log=lambda line: print(line, file=sys.stderr), ab_pairs=pairs)
    print(f"reader study: wrote {study.root / 'manifest.json'}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from benchmarks.reader_study.server import HostRefused, ServeOptions, serve

    if (args.certfile is None) != (args.keyfile is None):
        print("reader study: --certfile and --keyfile go together", file=sys.stderr)
        return EXIT_USAGE
    options = ServeOptions(args.host, args.host is not None, args.port, args.name_signin, args.certfile, args.keyfile)
    try:
        serve(load_study(args.study), options, log=lambda line: print(line, flush=True))
    except HostRefused as error:
        print(f"reader study: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    from benchmarks.reader_study.report import write_analysis
    from benchmarks.reader_study.store import DATABASE, Store

    study = load_study(args.study)
    if not (study.root / DATABASE).is_file():
        raise StudyError(f"{study.root / DATABASE}: no answers yet (serve the study first)")
    out = args.out or study.root / "analysis"
    store = Store(study.root / DATABASE)
    result = write_analysis(study, store, out)
    print(f"reader study: {len(result.likert)} scores and {len(result.preferences)} A/B choices from "
          f"{len(store.readers())} signed-up readers; report in {out / 'report.md'}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore")  # pydicom's warnings can quote element values
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    command = {"prepare": _prepare, "serve": _serve, "analyze": _analyze}[args.command]
    try:
        return command(args)
    except StudyError as error:
        print(f"reader study: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, OverflowError) as error:  # a path that cannot be read or written, a port out of range
        print(f"reader study: {path_error(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
