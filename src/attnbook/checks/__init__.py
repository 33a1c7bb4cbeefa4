"""Exercise checks: `core` holds the machinery, one module per chapter holds its checks."""

from attnbook.checks.core import CheckFailed, check_answer, compare_with_reference, verdict

__all__ = ["CheckFailed", "check_answer", "compare_with_reference", "verdict"]
