"""emotion-edge device side: camera -> faces -> int8 emotions -> MQTT.

This package must import and run without TensorFlow.
"""

__version__ = "0.1.0"
