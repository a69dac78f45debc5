"""emotion-edge device side: camera -> faces -> int8 emotions -> MQTT.

This package must import and run without TensorFlow.
"""

__version__ = "0.1.0"

_LAZY = {"Analyzer", "analyze_image"}  # emotion_edge.analyze, loaded on first use (OpenCV, LiteRT)


def __getattr__(name: str):
    if name in _LAZY:
        from emotion_edge import analyze

        return getattr(analyze, name)
    raise AttributeError(f"module 'emotion_edge' has no attribute {name!r}")
