"""Face detector quality on hand-labelled photos, scored by emotion_edge.tools.detector_eval.

dlib's example photos with imglab boxes (testing.xml and training.xml; boxes marked ignore='1'
count neither way, a match is IoU >= 0.3) and dogs.jpg, where the right answer is no face.
"""

from __future__ import annotations

from benchmarks.common import SAMPLES_DIR, log

DLIB = SAMPLES_DIR / "dlib_faces"
KINDS = ("blazeface", "blazeface_full", "haar")


def run(quick: bool = False) -> dict:
    from emotion_edge.detect.detector import DetectorConfig, make_detector
    from emotion_edge.tools.detector_eval import count_faces, evaluate, load_dlib_xml

    sets = [n for n in ("testing.xml", "training.xml") if (DLIB / n).is_file()]
    if not sets:
        raise FileNotFoundError(f"dlib_faces boxes not found in {DLIB}")
    dogs = DLIB / "dogs.jpg"
    out: dict = {
        "note": "dlib example photos (imglab boxes; ignore='1' boxes count neither way; match "
        "at IoU >= 0.3, greedy by score). Default detector settings (min_score 0.5, "
        "min_face_px 24). dogs.jpg has no human face: the right count is 0.",
        "results": [],
    }
    for kind in KINDS[:1] if quick else KINDS:
        det = make_detector(DetectorConfig(kind=kind))
        dogs_faces = count_faces(det, dogs) if dogs.is_file() else None
        for name in sets:
            res = evaluate(det, load_dlib_xml(DLIB / name))
            out["results"].append(
                {
                    "detector": res.detector,
                    "kind": kind,
                    "set": name,
                    "images": res.images,
                    "labelled_faces": res.labelled,
                    "true_positives": res.true_pos,
                    "false_positives": res.false_pos,
                    "recall": round(res.recall, 4),
                    "precision": round(res.precision, 4),
                    "ms_median": round(res.ms_median, 2),
                    "dogs_faces": dogs_faces,
                }
            )
            log(f"detector quality {res.summary()} [{name}]; dogs.jpg: {dogs_faces} faces")
    return out
