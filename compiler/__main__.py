"""``python -m compiler export|calibrate|build|verify|triton-repo`` (see docs/COMPILER.md, docs/SCALE_OUT.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.errors import CompilerError
from runtime.logtext import path_error

EXIT_ERROR = 2  # bad input or missing TensorRT/GPU
EXIT_MISMATCH = 1  # verify: candidate outside the tolerance


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse's "invalid integer value: 'abc'"
    return parse


def _export(args: argparse.Namespace) -> int:
    from compiler.export import export_checkpoint

    for result in export_checkpoint(args.checkpoint, args.out_dir, args.name, args.modalities):
        worst = max(result.checks, key=lambda c: c.max_abs)
        print(f"wrote {result.path} ({result.precision}); vs PyTorch: max abs {worst.max_abs:.3g} "
              f"on {len(result.checks)} inputs (worst: {worst.input_name})")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from compiler.calibrate import quantize, write_trt_cache

    if args.cache is not None:
        # Checked first so a machine without TensorRT fails before the CPU calibration runs.
        cache = write_trt_cache(args.onnx, args.data, args.cache, args.max_images)
        print(f"wrote TensorRT calibration cache {cache}")
    result = quantize(args.onnx, args.data, args.out, args.method, args.max_images, args.max_side)
    print(f"wrote {result.path}: {result.images} calibration images, {result.quantize_nodes} Q / "
          f"{result.dequantize_nodes} DQ nodes, {result.per_channel_weights} per-channel weights")
    return 0


def _build(args: argparse.Namespace) -> int:
    from compiler.build import BuildOptions, build, parse_shape, shape_string
    from runtime.model_contract import ModelContract

    options = BuildOptions(
        onnx_path=args.onnx,
        out=args.out,
        precision=args.precision,
        opt=parse_shape(args.opt),
        min=parse_shape(args.min) if args.min else None,
        max=parse_shape(args.max) if args.max else None,
        workspace_mib=args.workspace_mib,
        timing_cache=args.timing_cache,
        dla_core=args.dla_core,
        version_compatible=args.version_compatible,
        strongly_typed=args.strongly_typed,
        calibration_cache=args.calibration_cache,
    )
    record = build(options)
    contract = ModelContract.from_metadata(record["model_contract"])
    upscaled = "" if contract.scale == 1 else (
        f"; x{contract.scale} output up to {shape_string(contract.output_shape(options.shapes[2]))}")
    print(f"wrote {args.out} and its sidecar (TensorRT {record['tensorrt_version']}, "
          f"{record['gpu_name']}, {record['precision']}{upscaled})")
    return 0


def _triton_repo(args: argparse.Namespace) -> int:
    from compiler.triton_repo import RepoOptions, write_repository

    options = RepoOptions(
        name=args.name, version=args.version, platform=args.platform, max_batch=args.max_batch,
        dynamic_batching=not args.no_dynamic_batching, queue_delay_us=args.queue_delay_us,
        instances=args.instances, device=args.device, trt_fp16=args.trt_fp16, warmup_side=args.warmup,
    )
    result = write_repository(args.models, args.out, options)
    kind = result.config.get("platform") or f"{result.config['backend']} backend"
    print(f"wrote {result.model_dir} version {result.version} ({kind}, max batch "
          f"{result.config['max_batch_size']}): {', '.join(str(f) for f in result.files)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from compiler.verify import verify_engine, verify_onnx

    if args.heldout and args.reference is None:
        raise CompilerError("--heldout compares two ONNX files: use it with --reference")
    if args.engine is not None:
        report = verify_engine(args.engine, args.onnx, args.tolerance_db, args.data, args.seed)
    else:
        report = verify_onnx(args.onnx, args.reference, args.tolerance_db, args.data, args.seed, args.ort_opt)
    print("\n".join(report.lines()))
    if args.heldout:
        from compiler.onnx_io import load_model, read_contract
        from compiler.quality import heldout_pairs, heldout_task, psnr_drop, report_lines

        contract = read_contract(load_model(args.onnx), source=str(args.onnx))
        pairs = heldout_pairs(contract.modalities, heldout_task(contract))
        print("\n".join(report_lines(psnr_drop(args.reference, args.onnx, pairs, args.ort_opt))))
    return 0 if report.passed else EXIT_MISMATCH


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    main = argparse.ArgumentParser(
        prog="python -m compiler",
        description="Compile a medclear checkpoint: ONNX export, INT8 calibration, TensorRT "
        "engine build and verification. Exit codes: 0 ok, 1 verify outside tolerance, 2 error.",
    )
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("export", help="checkpoint -> NAME.fp32.onnx (+ NAME.int8.onnx for QAT)",
                       description="Export a checkpoint to ONNX (opset 17, dynamic N/H/W, model "
                       "contract in metadata) and check it against PyTorch with ONNX Runtime.")
    p.add_argument("--checkpoint", type=Path, required=True, help="medclear checkpoint (.pt)")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the ONNX files")
    p.add_argument("--name", help="file name stem NAME (default: the model's registry name, e.g. "
                   "'student'; the shipped model uses 'medclear_student')")
    p.add_argument("--modalities", nargs="+", metavar="MOD", help="release the model for these modalities only "
                   "(a subset of those it trained on; the runtime refuses the others), e.g. CT")
    p.set_defaults(run=_export)

    p = sub.add_parser("calibrate", help="fp32 ONNX + DICOM folder -> INT8 Q/DQ ONNX",
                       description="Post-training INT8: calibrate on DICOM images prepared by "
                       "the runtime and write a symmetric, per-channel Q/DQ ONNX (opset 17).")
    p.add_argument("--onnx", type=Path, required=True, help="the fp32 export (X.fp32.onnx)")
    p.add_argument("--data", type=Path, required=True, help="DICOM file or folder for calibration")
    p.add_argument("--out", type=Path, required=True, help="output INT8 ONNX (X.int8.onnx)")
    p.add_argument("--cache", type=Path, help="also write a TensorRT (<= 10) calibration cache; "
                   "needs TensorRT and a GPU")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="activation range method (default minmax)")
    p.add_argument("--max-images", type=_at_least(1), default=64, help="calibration frames used (default 64)")
    p.add_argument("--max-side", type=_at_least(32), default=512,
                   help="center-crop frames to at most this many pixels per side, at least 32 (default 512)")
    p.set_defaults(run=_calibrate)

    p = sub.add_parser("build", help="ONNX -> TensorRT engine + X.engine.json sidecar",
                       description="Build a TensorRT engine (TensorRT 8.5-11) on the machine "
                       "that will run it. Shapes are NxCxHxW, e.g. 1x1x512x512; --min/--max "
                       "default to --opt (a fixed shape). Shapes are the input's: a x2 super-resolution "
                       "model's output is twice the H and W; C=1 (the image) is widened to 2 for a "
                       "noise-map model (the image and its noise map).")
    p.add_argument("--onnx", type=Path, required=True, help="X.fp32.onnx (fp16) or X.int8.onnx (int8)")
    p.add_argument("--precision", required=True, choices=["fp16", "int8"])
    p.add_argument("--out", type=Path, required=True, help="engine file (X.engine)")
    p.add_argument("--opt", required=True, help="optimization profile opt shape")
    p.add_argument("--min", help="profile min shape (default: --opt)")
    p.add_argument("--max", help="profile max shape (default: --opt)")
    p.add_argument("--timing-cache", type=Path, help="timing cache file, loaded and saved")
    p.add_argument("--workspace-mib", type=int, default=1024, help="workspace limit (default 1024)")
    p.add_argument("--dla-core", type=int, help="build for this DLA core with GPU fallback "
                   "(Jetson; needs a fixed shape)")
    p.add_argument("--version-compatible", action="store_true",
                   help="version-compatible plan for the lean runtime (TensorRT >= 8.6)")
    p.add_argument("--strongly-typed", action="store_true",
                   help="strongly typed network on TensorRT 10 (always on 11)")
    p.add_argument("--calibration-cache", type=Path,
                   help="implicit INT8 from an fp32 ONNX with this cache (TensorRT <= 10)")
    p.set_defaults(run=_build)

    p = sub.add_parser("verify", help="engine vs ONNX (GPU) or ONNX vs ONNX (CPU)",
                       description="Compare a candidate with a reference on random and real "
                       "inputs; print max/mean abs error and PSNR; exit 1 below the tolerance.")
    p.add_argument("--onnx", type=Path, required=True,
                   help="with --engine: the engine's source ONNX; with --reference: the candidate")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--engine", type=Path, help="TensorRT engine to check against --onnx")
    target.add_argument("--reference", type=Path, help="reference ONNX (e.g. X.fp32.onnx)")
    p.add_argument("--tolerance-db", type=float,
                   help="minimum PSNR in dB (default by precision: fp32 80, fp16 50, int8 30)")
    p.add_argument("--data", type=Path, help="DICOM file or folder for real inputs "
                   "(default: packaged held-out CT slices)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--ort-opt", choices=["all", "basic"], default="all",
                   help="ONNX Runtime optimization for the candidate ONNX: all (default, fused "
                   "integer kernels, as the CPU runtime runs) or basic (Q/DQ as float ops: the "
                   "graph's own semantics, as TensorRT computes it)")
    p.add_argument("--heldout", action="store_true",
                   help="with --reference: also report PSNR vs clean of both models on the "
                   "trainer's held-out images, in HU/modality values through the runtime's "
                   "inference path as the CLI runs them (the INT8 PSNR drop; takes ~30 s); a x2 "
                   "super-resolution model: its output vs the high-resolution image of the SR held-out pairs")
    p.set_defaults(run=_verify)

    p = sub.add_parser("triton-repo", help="ONNX or engine(s) -> Triton Inference Server model repository",
                       description="Write REPO/NAME/config.pbtxt and REPO/NAME/<version>/ for Triton: "
                       "tensorrt_plan for engines (one per compute capability; the profile bounds the "
                       "batch and H/W), onnxruntime_onnx (or the python backend) for an ONNX model; "
                       "dynamic batching, instance group, warmup, and the model contract in the "
                       "config's parameters (docs/SCALE_OUT.md).")
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                   help="one .onnx, or TensorRT .engine/.plan files (with sidecars) built from one ONNX")
    p.add_argument("-o", "--out", type=Path, required=True, help="model repository folder (created if needed)")
    p.add_argument("--name", default="medclear", help="model name on the server (default medclear)")
    p.add_argument("--version", type=int, help="version folder (default: the next free number)")
    p.add_argument("--platform", default="auto", choices=["auto", "tensorrt", "onnxruntime", "python"],
                   help="auto: tensorrt for engines, onnxruntime for ONNX; python runs the ONNX through "
                   "medclear's runtime in Triton's Python backend (CPU; servers without onnxruntime)")
    p.add_argument("--device", choices=["gpu", "cpu"], help="instance kind (default gpu; python: cpu)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    p.add_argument("--max-batch", type=int, help="max_batch_size (default: the engine profile's max N; ONNX 8)")
    p.add_argument("--queue-delay-us", type=int, default=500,
                   help="dynamic batching: longest wait for a fuller batch (default 500 us)")
    p.add_argument("--no-dynamic-batching", action="store_true", help="run every request on its own")
    p.add_argument("--trt-fp16", action="store_true",
                   help="onnxruntime on GPU: TensorRT execution accelerator in FP16")
    p.add_argument("--warmup", type=int, default=512, metavar="SIDE",
                   help="warmup request of SIDE x SIDE (rounded up to the size multiple; engines: the "
                   "profile's opt shape); 0 = none (default 512)")
    p.set_defaults(run=_triton_repo)
    return main


def main(argv: list[str] | None = None) -> int:
    """Run one command; a one-line error and exit code 2 for a CompilerError, a path that cannot be
    read or written, or a missing optional package."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except CompilerError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:  # a path given cannot be read or written (a file where a folder should be, ...)
        print(f"error: {path_error(error)}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as error:  # export and --heldout need torch; a Jetson exports elsewhere
        print(f"error: `compiler {args.command}` needs the {error.name} package (pip install -e '.[compile]'; "
              "on a Jetson, export on a workstation: jetson/README.md)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
