"""The benchmark harness of issue 13 (``bench/run``; see bench/README.md)."""
