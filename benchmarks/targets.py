"""The project's measured targets and the seed's headline claims, judged against results.

Targets are fixed here (never loosened by a flag); each judgement says pass or miss and by
how much, or why it was not measured on this machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Target:
    """A limit on one measured quantity."""

    key: str
    description: str
    limit: float
    unit: str
    at_most: bool = True  # True: measured <= limit passes; False: measured >= limit passes


TARGETS = {
    t.key: t
    for t in (
        Target("int8_512_b1_p50_ms", "student INT8, 512x512, batch 1, p50 latency (ORT, CPU)", 60.0, "ms"),
        Target("speedup_vs_teacher", "student speedup over the teacher in PyTorch (512x512, batch 1, p50)", 10.0, "x", False),
        Target("dicom_ct1024_e2e_s", "1024x1024 CT DICOM read -> enhance -> write", 0.8, "s"),
        Target("int8_size_fraction", "INT8 ONNX file size as a fraction of the FP32 file", 0.30, "of fp32"),
        Target("peak_memory_xray2k_mb", "runtime peak memory (RSS) enhancing a ~2k x 2k X-ray", 1000.0, "MB"),
        Target("cold_start_s", "cold start: process start to first image out (512x512 CT)", 2.0, "s"),
    )
}


def judge(key: str, measured: float | None, subject: str = "", reason: str = "") -> dict:
    """Pass/miss of ``TARGETS[key]`` for ``measured``, with the margin as a value and a percent.

    ``margin`` is positive when there is headroom, negative by how much the target is missed.
    """
    target = TARGETS[key]
    record = {**asdict(target), "subject": subject, "measured": measured}
    if measured is None:
        return {**record, "status": "not measured", "margin": None, "margin_percent": None,
                "note": reason or "not measured on this machine"}
    margin = target.limit - measured if target.at_most else measured - target.limit
    passed = margin >= 0
    sign = "<=" if target.at_most else ">="
    note = (f"{measured:.4g} {target.unit} {sign} {target.limit:g}: "
            + (f"headroom {abs(margin):.3g} {target.unit}" if passed else f"misses by {abs(margin):.3g} {target.unit}")
            + f" ({abs(margin) / target.limit:.0%} of the limit)")
    return {**record, "status": "pass" if passed else "miss", "margin": margin,
            "margin_percent": 100.0 * margin / target.limit, "note": note}


def efficiency(subject: str, achieved_gflops: float | None, ceiling_gflops: float | None) -> dict:
    """Achieved GFLOP/s as a fraction of the matmul ceiling (reported, no pass/miss limit)."""
    fraction = achieved_gflops / ceiling_gflops if achieved_gflops and ceiling_gflops else None
    return {
        "key": "gflops_fraction_of_matmul_ceiling", "subject": subject, "measured": fraction,
        "achieved_gflops": achieved_gflops, "ceiling_gflops": ceiling_gflops, "status": "info",
        "note": (f"{achieved_gflops:.1f} of {ceiling_gflops:.1f} GFLOP/s ({fraction:.0%})" if fraction
                 else "not measured"),
    }


# The seed's headline claims, set beside what medclear measures on the machines we have.
CLAIMS = (
    ("trt_2ms", "2 ms per image with TensorRT"),
    ("ct1024_0p8s", "0.8 s for a 1024x1024 CT"),
    ("int8_75pct_smaller", "INT8 model 75% smaller"),
    ("distilled_3x_faster", "distilled model 3x faster"),
)


def claim(key: str, measured: str, holds: bool | None, note: str = "") -> dict:
    """One claim's standing: holds / does not hold / not measurable here."""
    text = dict(CLAIMS)[key]
    status = "not measurable here" if holds is None else ("holds" if holds else "does not hold")
    return {"key": key, "claim": text, "measured": measured, "status": status, "note": note}
