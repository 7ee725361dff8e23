"""What the Triton tests share: the local server must be there (fetched by .ci/run)."""

from __future__ import annotations

import pytest

from benchmarks.triton_local import missing_message, unpacked
from compiler.api_wheels import in_ci


def require_server() -> None:
    """Fail in CI, skip elsewhere, when the server is not unpacked (`python -m benchmarks.triton_local fetch`)."""
    if unpacked() is None:
        if in_ci():
            pytest.fail(missing_message(), pytrace=False)
        pytest.skip(missing_message())
