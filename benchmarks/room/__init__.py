"""The synthetic room benchmark's parts: scenes (clips with ground truth), the scorer, the
in-process daemon run. `python -m benchmarks.synthetic_room --help` is the entry point."""
