"""The one error type the compiler's commands raise for a user-facing, one-line failure."""


class CompilerError(RuntimeError):
    """A compiler step failed for a reason the user can act on (printed without a traceback)."""
