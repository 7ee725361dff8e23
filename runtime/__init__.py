"""medclear runtime: the lean bedside layer (numpy, pydicom, onnxruntime; TensorRT lazily)."""
