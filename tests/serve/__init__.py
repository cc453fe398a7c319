"""Tests of `flipseg serve` (a package, so the test modules share the helpers in conftest)."""
