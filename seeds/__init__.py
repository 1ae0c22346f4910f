"""The two seeds' code re-stated faithfully, as references for tests and benchmarks (see seeds/README.md)."""
