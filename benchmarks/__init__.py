"""emotion-edge benchmark suite: accuracy, speed and detector quality, host and emulated aarch64.

Run `python -m benchmarks.run --help`. Device-side modules (`common`, `device_bench`, `peer`,
`pipeline_bench`, `detector_quality`) import only what the device has (numpy, OpenCV, LiteRT),
so the same code runs on the host and under qemu-aarch64.
"""
