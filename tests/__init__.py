"""The test suite. Its shared helpers (tests/support/) assert too: pytest rewrites their asserts like those
of test modules, registered here before any of them is imported."""

import pytest

pytest.register_assert_rewrite("tests.support")
