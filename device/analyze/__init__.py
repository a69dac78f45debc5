"""Analyse still images: the daemon's detector and classifier on one photo, no camera, no server.

`Analyzer` (built once from the config's [detector] and [classifier] tables) and
`analyze_image()` (a default Analyzer) return an `AnalysisResult`; `ImageError` says why an
upload was refused (its `status` is the HTTP status the analysis API answers with). The HTTP
API on top of it is `emotion_edge.web.analyze_api`.
"""

from emotion_edge.analyze.analyzer import AnalysisResult, Analyzer, FaceResult, analyze_image
from emotion_edge.analyze.image import ImageError, ImageLimits, decode_image

__all__ = [
    "AnalysisResult",
    "Analyzer",
    "FaceResult",
    "ImageError",
    "ImageLimits",
    "analyze_image",
    "decode_image",
]
