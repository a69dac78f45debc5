"""Emulated aarch64 benchmarks: a Debian 12 arm64 userland run with qemu user-mode emulation."""
