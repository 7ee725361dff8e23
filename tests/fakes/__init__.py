"""Test fakes of NVIDIA's Python APIs (cuda-python, TensorRT) so the real TensorRT code runs on a CPU.

Every public name a fake module offers is a real API name; tests/test_tensorrt_api.py checks
them against the pinned bindings wheels (``python -m compiler.api_wheels fetch``), so the fakes
cannot drift from the real libraries. What a test inspects lives on the harness objects
(:class:`fakes.fake_cuda.FakeGpu`, :class:`fakes.fake_tensorrt.FakeTensorRT`), never on the fakes.
"""
