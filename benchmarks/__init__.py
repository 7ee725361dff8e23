"""medclear benchmarks: latency, quality and the CI latency regression check."""
