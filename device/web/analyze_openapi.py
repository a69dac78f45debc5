"""The OpenAPI 3.1 document of the image analysis API (served at /api/v1/openapi.json).

Built from the model's labels and the server's limits, so the document states what this
server does (which emotions, how many bytes and pixels) rather than a copy that drifts. Its
schemas are plain JSON Schema 2020-12 (OpenAPI 3.1), so a client can validate answers with
any JSON Schema library; the tests do exactly that.
"""

from __future__ import annotations

from emotion_edge import __version__

_ERROR_CODES = {
    "400": "Empty upload, malformed multipart/JSON/base64, or a bad option",
    "401": "A token is required (server listening beyond loopback)",
    "408": "The upload was not complete within the server's upload timeout",
    "413": "More bytes or pixels than this server accepts",
    "415": "Not a JPEG or PNG, or an unsupported Content-Type",
    "422": "A JPEG/PNG that is truncated or cannot be decoded",
    "429": "Too many images in progress; retry after the Retry-After seconds",
}


def openapi_document(labels: tuple[str, ...] | list[str], limits) -> dict:
    """`limits`: an AnalyzeLimits (max_bytes, max_pixels, workers, queue, top_k_default)."""
    labels = list(labels)
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    box = {
        "type": "object",
        "description": "Face box in image pixels (origin top left)",
        "required": ["x", "y", "w", "h"],
        "properties": {k: {"type": "number"} for k in ("x", "y", "w", "h")},
    }
    ranked = {
        "type": "object",
        "required": ["emotion", "confidence"],
        "properties": {
            "emotion": {"type": "string", "enum": labels},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    face = {
        "type": "object",
        "required": ["index", "box", "score", "emotion", "confidence", "probabilities", "top"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "box": {"$ref": "#/components/schemas/Box"},
            "score": {"type": "number", "description": "Face detector score (0..1)"},
            "emotion": {"type": "string", "enum": labels},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "probabilities": {
                "type": "object",
                "description": "Every emotion's probability; they sum to 1",
                "required": labels,
                "properties": {lab: unit for lab in labels},
                "additionalProperties": False,
            },
            "top": {"type": "array", "items": {"$ref": "#/components/schemas/Ranked"}},
            "crop_jpeg_b64": {
                "type": "string",
                "contentEncoding": "base64",
                "contentMediaType": "image/jpeg",
                "description": "The face as the model saw it (only with crops=true)",
            },
        },
    }
    result = {
        "type": "object",
        "required": [
            "schema",
            "request_id",
            "image",
            "detector",
            "model_version",
            "labels",
            "face_count",
            "faces",
            "elapsed_ms",
        ],
        "properties": {
            "schema": {"const": "emotion-edge/analysis/1"},
            "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "image": {
                "type": "object",
                "required": ["width", "height"],
                "properties": {
                    "width": {"type": "integer", "minimum": 1},
                    "height": {"type": "integer", "minimum": 1},
                },
            },
            "detector": {"type": "string"},
            "model_version": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "face_count": {"type": "integer", "minimum": 0},
            "faces": {
                "type": "array",
                "description": "Largest (nearest) face first",
                "items": {"$ref": "#/components/schemas/Face"},
            },
            "elapsed_ms": {"type": "number"},
            "queued_ms": {"type": "number"},
            "annotated_jpeg_b64": {
                "type": "string",
                "contentEncoding": "base64",
                "contentMediaType": "image/jpeg",
                "description": "The image with the face boxes drawn (only with annotated=true)",
            },
        },
    }
    error = {
        "type": "object",
        "required": ["error", "code", "request_id"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong, in one line"},
            "code": {"type": "string"},
            "request_id": {"type": "string"},
        },
    }
    flag = {"type": "boolean", "default": False}
    options = {
        "crops": {**flag, "description": "Add each face's JPEG thumbnail (base64)"},
        "annotated": {**flag, "description": "Add the annotated image (JPEG, base64)"},
        "top_k": {
            "type": "integer",
            "minimum": 1,
            "maximum": len(labels),
            "default": min(limits.top_k_default, len(labels)),
            "description": "How many ranked emotions per face in `top`",
        },
        "scan": {
            "type": "string",
            "enum": ["photo", "frame"],
            "default": "photo",
            "description": "photo: every view of the detector, as the daemon scans a photo "
            "(finds more and smaller faces); frame: one pass, as on a camera frame (faster)",
        },
    }
    err_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses = {
        "200": {
            "description": "The faces found and their emotions",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Analysis"}}},
        },
        **{code: {"description": text, "content": err_ref} for code, text in _ERROR_CODES.items()},
    }
    image_bytes = {"type": "string", "contentMediaType": "image/jpeg"}
    png_bytes = {"type": "string", "contentMediaType": "image/png"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "emotion-edge image analysis",
            "version": __version__,
            "description": (
                "Find the faces in one JPEG or PNG image and classify each face's emotion "
                f"({', '.join(labels)}) with the device's own detector and int8 model. "
                f"Limits: {limits.max_bytes} bytes, {limits.max_pixels} pixels, "
                f"{limits.workers} analyses at once with {limits.queue} waiting. Images are "
                "never stored or logged."
            ),
        },
        "paths": {
            "/api/v1/analyze": {
                "post": {
                    "operationId": "analyzeImage",
                    "summary": "Faces and emotions in one image",
                    "parameters": [
                        {"name": k, "in": "query", "required": False, "schema": v}
                        for k, v in options.items()
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {
                                            "type": "string",
                                            "contentMediaType": "application/octet-stream",
                                        },
                                        **options,
                                    },
                                }
                            },
                            "image/jpeg": {"schema": image_bytes},
                            "image/png": {"schema": png_bytes},
                            "application/octet-stream": {"schema": {"type": "string"}},
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {
                                            "type": "string",
                                            "contentEncoding": "base64",
                                            "description": "The JPEG/PNG file, base64 (a data: "
                                            "URL is accepted too)",
                                        },
                                        **options,
                                    },
                                }
                            },
                        },
                    },
                    "responses": responses,
                }
            },
            "/api/v1/stats": {
                "get": {
                    "operationId": "analyzeStats",
                    "summary": "Requests, analyses, faces and refusals (by status and code) so far",
                    "responses": {
                        "200": {
                            "description": "Counts since the server started",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        # no token on loopback; beyond it the live view's token (or its session cookie)
        "security": [{}, {"bearerToken": []}],
        "components": {
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "[web] token, needed when the server listens beyond loopback",
                }
            },
            "schemas": {
                "Analysis": result,
                "Face": face,
                "Box": box,
                "Ranked": ranked,
                "Error": error,
            },
        },
    }
