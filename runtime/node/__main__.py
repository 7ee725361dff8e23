"""python -m runtime.node: the DICOM node (receive, enhance, forward); see docs/NODE.md."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from dataclasses import fields
from pathlib import Path

from runtime.backends.select import BACKENDS
from runtime.logtext import cause
from runtime.node.config import ConfigError, NodeConfig, build, load_file
from runtime.node.service import Node, NodeError

EXIT_OK, EXIT_USAGE = 0, 2

DESCRIPTION = """\
A DICOM node between a scanner (or PACS) and a PACS: it receives images (Store SCP, C-ECHO),
enhances each with a medclear model (each backend opened once: without --model the shipped
denoiser, and MR instances the MR one; the same inference path and derived DICOM as
python -m runtime.enhance) and forwards the derived series to --forward
(Store SCU), one association per series.
"""

EPILOG = """\
durability:
  A C-STORE is answered Success only once the instance is durable: a record in the spool's
  write-ahead journal (SPOOL/journal/, preallocated segments: one fdatasync per instance),
  moved into SPOOL/incoming/ (written atomically and fsynced) in the background; with
  --no-journal, written into SPOOL/incoming/ atomically and fsynced before the answer. A crash
  or kill -9 at any moment loses no acknowledged image, and the node replays the journal and
  resumes whatever the spool holds when it starts again. Forwarding is retried with
  backoff (--retry-base-s doubling up to --retry-max-s); after --max-attempts (counted in the
  spool, across restarts) the instance moves to SPOOL/failed/ with a one-line NAME.reason
  file, and the node goes on (--retry-failed moves them back at the next start). Derived UIDs are a pure function of
  the source UIDs and the model, so a re-sent instance is the same instance to the PACS.

series:
  Instances of one source series become one derived series (same study; Series Description
  "<original> medclear enhanced (<model>)"), forwarded over one association once no
  instance of the series waits to be enhanced and none arrived for --settle-s seconds.

what is not enhanced:
  SR, RT, presentation states, other non-images, colour images and modalities the model does
  not cover are accepted; with --forward-original they are forwarded unchanged (and so are
  the originals of enhanced images), otherwise they are logged and dropped.

access and operations:
  --allow AE[@HOST] (repeatable; HOST an IP address, a network such as 10.1.2.0/24, or a
  name resolved at start): associations from other calling AE titles or hosts are rejected
  and logged (AE title and address only; logs never hold patient data). --tls-cert/--tls-key
  make the SCP speak TLS (--tls-ca: callers need a certificate from that CA);
  --forward-tls does the same towards the destination. When the spool holds more than
  --spool-limit-mb, or its disk has less than --min-free-mb free, C-STOREs are answered Out of
  Resources (0xA700). SIGTERM (or Ctrl-C) drains: no new associations, those in progress
  finish (--drain-timeout-s), the instance in hand is finished, then exit 0. --http HOST:PORT
  serves /healthz and Prometheus /metrics.

config file:
  --config FILE (.toml or .json) holds the same settings under the options' names with
  underscores (spool_limit_mb = 4096, allow = ["CT1", "PACS@10.0.0.5"], ...); command-line
  options override it. Relative paths in it are relative to its folder.

exit codes:
  0  stopped cleanly (SIGTERM/SIGINT)
  2  bad settings, or the node could not start (model, spool in use, port in use)
"""


D = {item.name: item.default for item in fields(NodeConfig)}  # the defaults, stated once


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime.node", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--config", type=Path, help="TOML or JSON file with these settings (options override it)")
    add("--port", type=int, help=f"DICOM port to listen on (default {D['port']}; 0 = any free port)")
    add("--bind", help=f"address to listen on (default {D['bind']})")
    add("--ae-title", help=f"this node's AE title (default {D['ae_title']}); also the calling AE title when forwarding")
    add("--spool", type=Path, help="spool folder (required): received, derived and failed instances")
    add("--forward", metavar="AE@HOST:PORT", help="destination (required), e.g. ORTHANC@127.0.0.1:4242")
    add("--allow", action="append", metavar="AE[@HOST]", help="accept only these callers (repeatable)")
    add("--forward-original", action="store_true", default=None,
        help="also forward every received instance unchanged (and what cannot be enhanced)")
    add("--model", help="model file: .onnx or a TensorRT .engine, or a Triton model URL grpc://HOST:PORT/NAME "
        "(default: the shipped denoiser; MR files to the MR one where installed)")
    add("--modality-model", dest="modality_models", action="append", metavar="MODALITY=MODEL",
        help="instances of MODALITY go to MODEL beside --model (e.g. MR=medclear_student_mr.int8.engine on a "
        "Jetson); repeatable; config file: modality_models = {MR = \"...\"}")
    add("--backend", choices=BACKENDS, help="inference backend (default auto)")
    add("--threads", type=int, help="CPU threads for ONNX Runtime (default: all but one, kept for receiving)")
    add("--strength", type=float, help="0 = off, 1 = the model's output (default), up to 4")
    add("--http", metavar="HOST:PORT", help="serve /healthz and /metrics here (e.g. 127.0.0.1:8080)")
    add("--spool-limit-mb", type=int, help=f"answer Out of Resources above this spool size (default {D['spool_limit_mb']})")
    add("--min-free-mb", type=int, help=f"answer Out of Resources below this free disk space (default {D['min_free_mb']})")
    add("--max-attempts", type=int, help=f"forwarding attempts before failed/ (default {D['max_attempts']})")
    add("--retry-base-s", type=float, help=f"first retry delay, doubled per attempt (default {D['retry_base_s']:g})")
    add("--retry-max-s", type=float, help=f"longest retry delay (default {D['retry_max_s']:g})")
    add("--settle-s", type=float, help=f"a series is forwarded once quiet this long (default {D['settle_s']:g})")
    add("--max-associations", type=int, help=f"concurrent incoming associations (default {D['max_associations']})")
    add("--timeout-s", type=float, help=f"network, ACSE and DIMSE timeouts (default {D['timeout_s']:g})")
    add("--drain-timeout-s", type=float, help=f"how long SIGTERM waits for work in progress (default {D['drain_timeout_s']:g})")
    add("--receive-first", type=int, help="while receiving, enhance only once this many received instances "
        f"wait (0: enhance while receiving; default {D['receive_first']})")
    add("--worker-nice", type=int, help=f"how much lower the model process' CPU priority is (default {D['worker_nice']})")
    add("--tls-cert", type=Path, help="PEM certificate: receive over TLS only")
    add("--tls-key", type=Path, help="PEM private key for --tls-cert")
    add("--tls-ca", type=Path, help="PEM CA bundle: require client certificates signed by it")
    add("--forward-tls", action="store_true", default=None, help="forward over TLS")
    add("--forward-tls-ca", type=Path, help="PEM CA bundle that signed the destination's certificate")
    add("--forward-tls-cert", type=Path, help="PEM client certificate for the destination")
    add("--forward-tls-key", type=Path, help="PEM private key for --forward-tls-cert")
    add("--retry-failed", action="store_true", default=None, help="at start, move failed/ back to be retried")
    add("--journal", action=argparse.BooleanOptionalAction, default=None,
        help="acknowledge once journaled (one fdatasync in a preallocated segment; default), or "
             "--no-journal: once written into incoming/ and fsynced (two flushes)")
    add("--journal-segment-mb", type=int, metavar="N",
        help=f"journal segment size (default {D['journal_segment_mb']}; larger instances are written directly)")
    add("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    return parser


def settings_from(args: argparse.Namespace) -> NodeConfig:
    """The NodeConfig: the config file's settings, then the command line's over them."""
    settings = load_file(args.config) if args.config is not None else {}
    for key, value in vars(args).items():
        if key != "config" and value is not None:
            settings[key] = value
    return build(settings)


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s medclear-node %(levelname)s: %(message)s")
    # pynetdicom's own logs can quote identifiers and, at debug level, whole messages: keep them out.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")  # pydicom's warnings can quote element values


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = settings_from(args)
    except ConfigError as error:
        print(f"medclear-node: error: {cause(error, 500)}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.log_level)
    # Receiving threads wait for the GIL while the forwarder holds it; switch every 1 ms, not 5.
    sys.setswitchinterval(0.001)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = Node(config).start()
    except (NodeError, ConfigError) as error:
        logging.getLogger("medclear.node").error("%s", cause(error, 1000))
        return EXIT_USAGE
    stop.wait()
    logging.getLogger("medclear.node").info("stopping: draining work in progress")
    node.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
