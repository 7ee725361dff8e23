"""medclear compiler: checkpoint -> ONNX (fp32, INT8 Q/DQ) -> TensorRT engine, and verification.

Commands: ``python -m compiler export|calibrate|build|verify`` (see docs/COMPILER.md).
torch is imported only by :mod:`compiler.export`, TensorRT only lazily by :mod:`compiler.build`.
"""
