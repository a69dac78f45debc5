"""Synthetic room clips with ground truth: FER2013 faces pasted as people into real backgrounds.

Each scene is a 640x480 mp4 (15 fps, mp4v, as a camera would deliver it to the daemon) plus a
JSON ground truth: every person's face box, expression and ignore flag per frame, the
expression switches and the occlusion.

- **Faces**: FER2013 PublicTest rows (never PrivateTest, so nothing here is tuned on the split
  the model is reported on) whose FER+ majority label is one of the 7 emotions and holds at
  least half of the votes; the FER+ majority is the truth. A face is used once per clip set.
  The 7 of 3211 such faces whose framing the box rule below does not fit (a small face in a
  corner, two faces, a profile) are left out (`well_framed`).
- **Backgrounds**: real photographs shipped inside scikit-image (`coffee`: a table top,
  `rocket`: an outdoor scene with structures, `brick`: a wall), scaled and centre-cropped to
  640x480. None contains a human face.
- **People**: a 48x48 face upscaled (cubic; area when shrunk) to a square patch, feathered by a
  soft elliptical alpha mask (opaque inside 85 % of the ellipse radius, smooth to 0 at the
  edge), optionally rolled (tilted) a few degrees, swaying and moving nearer/farther slowly.
- **Switches**: every 4-8 s a person's face is replaced by another FER2013 face of a different
  expression, cross-faded over 0.2 s; the switch time is the middle of the fade. FER2013 has no
  identities, so the new face is the same person.
- **Occlusion**: in scenes that have one, a dark rectangle (a passer-by) sweeps across one
  face: fully covered for 0.5 s, partly for 0.25 s before and after.

Ground-truth box rule (checked visually, and against where BlazeFace puts its box on the
same faces: median x 0.08-0.91, y 0.15-0.98 of the patch for short range): in a pasted
patch of side S, the face box is x from 0.10 S to 0.90 S and y from 0.15 S to 0.95 S, i.e.
0.8 S square, centred 0.55 S down. "Face height" (the bucket) is that box's height.

A face is *ignored* in a frame (neither a miss nor, when detected, a false positive) when less
than 70 % of its box is inside the frame or not covered by the occluder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from emotion_edge.geometry import iou

FPS = 15.0
FRAME_W, FRAME_H = 640, 480
GENERATOR_VERSION = 2  # 2: well-framed faces only
# the ground-truth box inside a pasted patch of side S (fractions of S); see module doc
BOX_X0, BOX_Y0, BOX_SIDE = 0.10, 0.15, 0.80
VISIBLE_MIN = 0.7  # below this visible fraction of its box a face is ignored
FADE_S = 0.2  # cross-fade between two faces of one person
SEGMENT_S = (4.0, 8.0)  # how long each expression is held
MIN_VOTE_SHARE = 0.5  # FER+ majority must hold this share of the votes

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
BACKGROUNDS = ("coffee", "rocket", "brick")


@dataclass(frozen=True)
class PersonSpec:
    """One person: face centre and height (px) at rest, slow sway and zoom, head roll."""

    cx: float
    cy: float
    height: float
    sway_x: float = 0.0  # amplitude, px
    sway_y: float = 0.0
    period_s: float = 14.0
    zoom: float = 0.0  # relative amplitude of the face height
    zoom_period_s: float = 22.0
    roll_deg: float = 0.0  # amplitude of a slow head tilt
    enter_s: float = 0.0
    leave_s: float = math.inf


@dataclass(frozen=True)
class OcclusionSpec:
    person: int
    start_s: float  # the rectangle starts covering the face; full cover lasts 0.5 s
    cover_s: float = 0.5


@dataclass(frozen=True)
class SceneSpec:
    name: str
    duration_s: float
    background: str
    persons: tuple[PersonSpec, ...]
    occlusion: OcclusionSpec | None = None
    about: str = ""
    segment_s: tuple[float, float] = SEGMENT_S  # how long each expression is held


def default_scenes(quick: bool = False) -> list[SceneSpec]:
    """near: one close-up 180-380 px (about ten faces); room: six faces 20-125 px; mixed: 25-345 px.

    `quick` halves every duration (fewer switches; for tuning loops, not for reporting)."""
    k = 0.5 if quick else 1.0
    near = SceneSpec(
        "near",
        60.0 * k,
        "coffee",
        (PersonSpec(320, 250, 280, sway_x=50, sway_y=15, zoom=0.35, roll_deg=15),),
        about="one participant close to the camera, leaning in and out (face 180-380 px)",
    )
    room = SceneSpec(
        "room",
        60.0 * k,
        "brick",
        (
            PersonSpec(80, 120, 20, sway_x=10, period_s=17),
            PersonSpec(220, 110, 27, sway_x=14, period_s=13, zoom=0.1),
            PersonSpec(380, 130, 34, sway_x=16, period_s=19, zoom=0.1, roll_deg=6),
            PersonSpec(540, 150, 48, sway_x=18, period_s=15, zoom=0.15),
            PersonSpec(150, 320, 72, sway_x=24, sway_y=6, period_s=21, zoom=0.15, roll_deg=8),
            PersonSpec(450, 330, 110, sway_x=30, sway_y=8, period_s=16, zoom=0.15, roll_deg=10),
        ),
        occlusion=OcclusionSpec(4, 20.0 * k),
        about="a classroom / shop: six people at the back and middle of the room (20-125 px)",
    )
    mixed = SceneSpec(
        "mixed",
        45.0 * k,
        "rocket",
        (
            PersonSpec(240, 250, 300, sway_x=25, sway_y=10, zoom=0.15, roll_deg=12),
            PersonSpec(480, 180, 90, sway_x=25, period_s=18, zoom=0.2),
            PersonSpec(560, 380, 36, sway_x=12, period_s=11, zoom=0.1),
            PersonSpec(430, 80, 28, sway_x=20, period_s=9, enter_s=8.0 * k, leave_s=35.0 * k),
        ),
        about="a kiosk: one visitor close, others behind, one walking through (25-345 px)",
    )
    return [near, room, mixed]


# -- faces --------------------------------------------------------------------------------------


@dataclass
class FacePool:
    """PublicTest faces per FER+ majority label (label index in LABELS order), shuffled."""

    images: np.ndarray  # uint8 [N, 48, 48]
    rows: np.ndarray  # FER2013 csv row of each image
    labels: np.ndarray  # LABELS index of each image
    by_label: dict[int, list[int]] = field(default_factory=dict)  # label -> indices, draw order

    def for_scene(self, k: int, n: int) -> FacePool:
        """The k-th of n disjoint shares of the faces, so scenes never share a face and a
        scene's faces do not depend on which other scenes were generated."""
        share = {lab: q[k::n] for lab, q in self.by_label.items()}
        return FacePool(self.images, self.rows, self.labels, share)

    def draw(self, label: int) -> int:
        """The next unused face of a label (wraps around when a label runs out)."""
        queue = self.by_label[label]
        i = queue.pop(0)
        queue.append(i)
        return i


def load_face_pool(data: Path, seed: int) -> FacePool:
    from emotion_edge_train.data import ferplus_majority, load_fer  # TensorFlow-free

    ds = load_fer(data)
    if ds.ferplus_votes is None:
        raise FileNotFoundError(f"FER+ votes (fer2013new.csv) not found beside {data}")
    rows = ds.split("PublicTest")
    votes = ds.ferplus_votes[rows]
    major = ferplus_majority(votes)
    share = votes.max(axis=1) / np.maximum(votes.sum(axis=1), 1.0)
    keep = (major >= 0) & (share >= MIN_VOTE_SHARE)
    rows, major = rows[keep], major[keep]
    framed = well_framed(ds.images[rows])
    rows, major = rows[framed], major[framed]
    rng = np.random.default_rng(seed)
    by_label = {}
    for lab in range(len(LABELS)):
        idx = np.flatnonzero(major == lab)
        by_label[lab] = [int(i) for i in rng.permutation(idx)]
    return FacePool(ds.images[rows], rows, major, by_label)


FRAMING_SIDE = 160  # patch side at which the framing check looks at a face


def well_framed(images: np.ndarray) -> np.ndarray:
    """Faces whose framing fits the box rule: BlazeFace short range, shown the face as a
    160 px patch on a plain gray canvas (a size it finds faces at reliably), puts its best box
    where the scorer would match it to the rule's box (IoU >= 0.3, or its centre inside with
    a height within 2x: score.match_boxes), or finds nothing (no evidence against the rule).

    A few FER2013 crops hold a small or off-centre face (a head with long hair, a face in a
    corner); the rule's box would be wrong for them and score a correct detection as false.
    Faces the detector cannot find are kept, so the check does not favour the detector."""
    import cv2
    from emotion_edge.config import DetectorConfig
    from emotion_edge.detect.detector import make_detector

    det = make_detector(DetectorConfig(kind="blazeface"))
    canvas_side = 2 * FRAMING_SIDE
    x0 = y0 = (canvas_side - FRAMING_SIDE) // 2
    side = FRAMING_SIDE
    rule_box = (x0 + BOX_X0 * side, y0 + BOX_Y0 * side, BOX_SIDE * side, BOX_SIDE * side)
    keep = np.ones(len(images), bool)
    for i, face in enumerate(images):
        canvas = np.full((canvas_side, canvas_side), 128, np.uint8)
        canvas[y0 : y0 + side, x0 : x0 + side] = cv2.resize(
            face, (side, side), interpolation=cv2.INTER_CUBIC
        )
        found = det.detect(canvas)
        if found:
            best = max(found, key=lambda d: d.score)
            keep[i] = _matches(tuple(best.box), rule_box)
    return keep


def _matches(det: tuple, rule: tuple) -> bool:
    """score.match_boxes's criterion for one pair (scenes.py cannot import score.py)."""
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    inside = rule[0] <= cx <= rule[0] + rule[2] and rule[1] <= cy <= rule[1] + rule[3]
    return iou(det, rule) >= 0.3 or (inside and 0.5 <= det[3] / rule[3] <= 2.0)


# -- backgrounds --------------------------------------------------------------------------------


def background(name: str) -> np.ndarray:
    """A 640x480 BGR photograph from scikit-image's bundled data (no download)."""
    import cv2
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    else:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    s = max(FRAME_W / w, FRAME_H / h)
    img = cv2.resize(img, (math.ceil(w * s), math.ceil(h * s)), interpolation=cv2.INTER_AREA)
    y0 = (img.shape[0] - FRAME_H) // 2
    x0 = (img.shape[1] - FRAME_W) // 2
    return np.ascontiguousarray(img[y0 : y0 + FRAME_H, x0 : x0 + FRAME_W])


# -- motion -------------------------------------------------------------------------------------


def pose(p: PersonSpec, t: float, phase: float) -> tuple[float, float, float, float]:
    """(centre x, centre y, face height, roll degrees) of a person's face box at time t."""
    w = 2 * math.pi * t / p.period_s + phase
    cx = p.cx + p.sway_x * math.sin(w)
    cy = p.cy + p.sway_y * math.sin(0.7 * w + 1.0)
    h = p.height * (1.0 + p.zoom * math.sin(2 * math.pi * t / p.zoom_period_s + 2 * phase))
    roll = p.roll_deg * math.sin(2 * math.pi * t / (p.period_s * 1.3) + 3 * phase)
    return cx, cy, h, roll


def patch_geometry(cx: float, cy: float, h: float) -> tuple[int, int, int, tuple]:
    """Patch side S and top-left (x0, y0) for a face box of height h centred at (cx, cy),
    and the ground-truth box (x, y, w, h) by the box rule, from the rounded patch."""
    side = max(4, int(round(h / BOX_SIDE)))
    x0 = int(round(cx - (BOX_X0 + BOX_SIDE / 2) * side))
    y0 = int(round(cy - (BOX_Y0 + BOX_SIDE / 2) * side))
    box = (x0 + BOX_X0 * side, y0 + BOX_Y0 * side, BOX_SIDE * side, BOX_SIDE * side)
    return side, x0, y0, box


# -- schedule -----------------------------------------------------------------------------------


@dataclass
class Segment:
    start_s: float
    end_s: float
    label: int
    face: int  # index into the FacePool


def schedule(
    p: PersonSpec, duration: float, pool: FacePool, rng, segment_s=SEGMENT_S
) -> list[Segment]:
    """Expression segments of 4-8 s (`segment_s`), each a new label and a new face."""
    start = p.enter_s
    end = min(duration, p.leave_s)
    segs: list[Segment] = []
    label = int(rng.integers(len(LABELS)))
    t = start
    while t < end:
        seg_end = min(end, t + float(rng.uniform(*segment_s)))
        if end - seg_end < segment_s[0] / 2:  # no short tail segment: hold to the end
            seg_end = end
        segs.append(Segment(t, seg_end, label, pool.draw(label)))
        label = int(rng.choice([i for i in range(len(LABELS)) if i != label]))
        t = seg_end
    return segs


# -- rendering ----------------------------------------------------------------------------------


def feather_mask(side: int) -> np.ndarray:
    """Float alpha [S, S]: an ellipse around the face, opaque inside 85 % of its radius."""
    c = (np.arange(side, dtype=np.float32) + 0.5) / side
    u = (c[None, :] - 0.5) / 0.47
    v = (c[:, None] - 0.52) / 0.52
    r = np.sqrt(u * u + v * v)
    a = np.clip((1.0 - r) / 0.15, 0.0, 1.0)
    return a * a * (3 - 2 * a)  # smoothstep


def face_patch(face48: np.ndarray, side: int, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """(gray float patch, alpha) of one face at side S, rolled about the face box centre."""
    import cv2

    interp = cv2.INTER_CUBIC if side > 48 else cv2.INTER_AREA
    img = cv2.resize(face48, (side, side), interpolation=interp).astype(np.float32)
    alpha = feather_mask(side)
    if abs(roll) > 0.5:
        centre = ((BOX_X0 + BOX_SIDE / 2) * side, (BOX_Y0 + BOX_SIDE / 2) * side)
        m = cv2.getRotationMatrix2D(centre, roll, 1.0)
        img = cv2.warpAffine(
            img, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = cv2.warpAffine(
            alpha,
            m,
            (side, side),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
    return img, alpha


def blend(frame: np.ndarray, img: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend a gray patch into a BGR float frame in place, clipped to the frame."""
    h, w = frame.shape[:2]
    s = img.shape[0]
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    px0, py0 = fx0 - x0, fy0 - y0
    px1, py1 = px0 + (fx1 - fx0), py0 + (fy1 - fy0)
    a = alpha[py0:py1, px0:px1, None]
    region = frame[fy0:fy1, fx0:fx1]
    region *= 1.0 - a
    region += a * img[py0:py1, px0:px1, None]


def visible_fraction(box: tuple, occluder: tuple | None) -> float:
    """Share of a box inside the frame and not under the occluder rectangle (x0, y0, x1, y1)."""
    x, y, w, h = box
    area = max(w * h, 1e-9)
    ix0, iy0 = max(0.0, x), max(0.0, y)
    ix1, iy1 = min(float(FRAME_W), x + w), min(float(FRAME_H), y + h)
    inside = max(0.0, ix1 - ix0) * max(0.0, iy1 - iy0)
    covered = 0.0
    if occluder is not None:
        ox0, oy0, ox1, oy1 = occluder
        cx0, cy0 = max(ix0, ox0), max(iy0, oy0)
        cx1, cy1 = min(ix1, ox1), min(iy1, oy1)
        covered = max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
    return (inside - covered) / area


def occluder_rect(occ: OcclusionSpec, box: tuple, t: float) -> tuple | None:
    """The passer-by rectangle at time t: 3 face widths wide, moving 4 face widths per
    second, so it fully covers the face for 0.5 s (cover_s) and partly 0.25 s either side."""
    x, y, w, h = box
    speed = 2.0 * w / occ.cover_s
    width = 3.0 * w
    # moving right; its right edge reaches the face's right edge (full cover) at start_s
    left = x + w - width + (t - occ.start_s) * speed
    if left > FRAME_W or left + width < 0 or abs(t - occ.start_s - occ.cover_s / 2) > 2.0:
        return None
    return (left, y - 1.5 * h, left + width, y + 2.5 * h)


@dataclass
class Truth:
    """Ground truth of one clip; `faces[i]` lists frame i's faces as
    [person, x, y, w, h, label index, ignore 0/1]."""

    scene: str
    fps: float
    size: tuple[int, int]
    n_frames: int
    persons: list[dict]
    switches: list[dict]
    occlusions: list[dict]
    faces: list[list[list]]
    labels: tuple[str, ...] = LABELS
    box_rule: str = (
        f"patch side S: box x {BOX_X0:.2f}S..{BOX_X0 + BOX_SIDE:.2f}S, "
        f"y {BOX_Y0:.2f}S..{BOX_Y0 + BOX_SIDE:.2f}S"
    )
    params: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Truth:
        d = dict(d)
        d["size"] = tuple(d["size"])
        d["labels"] = tuple(d["labels"])
        return cls(**d)


def scene_key(spec: SceneSpec, seed: int) -> str:
    """A digest of everything that shapes a clip: regenerate when it differs."""
    text = json.dumps([GENERATOR_VERSION, seed, asdict(spec)], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_scene(spec: SceneSpec, pool: FacePool, seed: int, video_path: Path) -> Truth:
    """Write the clip to `video_path` (mp4v) and return its ground truth."""
    import cv2

    rng = np.random.default_rng(seed)
    n = int(round(spec.duration_s * FPS))
    phases = [float(rng.uniform(0, 2 * math.pi)) for _ in spec.persons]
    plans = [schedule(p, spec.duration_s, pool, rng, spec.segment_s) for p in spec.persons]
    bg = background(spec.background).astype(np.float32)
    video_path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (FRAME_W, FRAME_H)
    )
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {video_path} with the mp4v codec")
    faces_per_frame: list[list[list]] = []
    noise_rng = np.random.default_rng(seed + 1)
    # farther people first: nearer ones are drawn over them
    order = sorted(range(len(spec.persons)), key=lambda i: spec.persons[i].height)
    try:
        for i in range(n):
            t = i / FPS
            frame = bg.copy()
            gt = []
            occ_rect = None
            for pi in order:
                p = spec.persons[pi]
                if not (p.enter_s <= t < p.leave_s):
                    continue
                cx, cy, h, roll = pose(p, t, phases[pi])
                side, x0, y0, box = patch_geometry(cx, cy, h)
                seg_i = next(
                    k for k, s in enumerate(plans[pi]) if t < s.end_s or k == len(plans[pi]) - 1
                )
                seg = plans[pi][seg_i]
                img, alpha = face_patch(pool.images[seg.face], side, roll)
                # cross-fade into the next face around the switch (its middle = the switch)
                nxt = plans[pi][seg_i + 1] if seg_i + 1 < len(plans[pi]) else None
                prv = plans[pi][seg_i - 1] if seg_i > 0 else None
                w_other, other = 0.0, None
                if nxt is not None and seg.end_s - t < FADE_S / 2:
                    other, w_other = nxt, 0.5 - (seg.end_s - t) / FADE_S
                elif prv is not None and t - seg.start_s < FADE_S / 2:
                    other, w_other = prv, 0.5 - (t - seg.start_s) / FADE_S
                if other is not None and w_other > 0:
                    img2, _ = face_patch(pool.images[other.face], side, roll)
                    img = (1 - w_other) * img + w_other * img2
                blend(frame, img, alpha, x0, y0)
                if spec.occlusion is not None and spec.occlusion.person == pi:
                    occ_rect = occluder_rect(spec.occlusion, box, t)
                gt.append([pi, *[round(v, 2) for v in box], seg.label, 0])
            if occ_rect is not None:
                ox0, oy0, ox1, oy1 = (int(round(v)) for v in occ_rect)
                cv2.rectangle(frame, (ox0, oy0), (ox1, oy1), (70, 60, 55), thickness=-1)
            for g in gt:
                occ = occ_rect if (spec.occlusion and g[0] == spec.occlusion.person) else None
                if visible_fraction(tuple(g[1:5]), occ) < VISIBLE_MIN:
                    g[6] = 1
            frame += noise_rng.normal(0.0, 2.0, frame.shape).astype(np.float32)
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
            faces_per_frame.append(gt)
    finally:
        writer.release()
    persons, switches = [], []
    for pi, segs in enumerate(plans):
        persons.append(
            {
                "person": pi,
                "spec": asdict(spec.persons[pi]),
                "segments": [
                    {
                        "start_s": round(s.start_s, 3),
                        "end_s": round(s.end_s, 3),
                        "label": LABELS[s.label],
                        "fer_row": int(pool.rows[s.face]),
                    }
                    for s in segs
                ],
            }
        )
        for a, b in zip(segs, segs[1:], strict=False):
            switches.append(
                {
                    "person": pi,
                    "t_s": round(b.start_s, 3),
                    "frame": int(round(b.start_s * FPS)),
                    "from": LABELS[a.label],
                    "to": LABELS[b.label],
                }
            )
    occlusions = []
    if spec.occlusion is not None:
        o = spec.occlusion
        occlusions.append(
            {"person": o.person, "start_s": o.start_s, "end_s": o.start_s + o.cover_s}
        )
    return Truth(
        scene=spec.name,
        fps=FPS,
        size=(FRAME_W, FRAME_H),
        n_frames=n,
        persons=persons,
        switches=switches,
        occlusions=occlusions,
        faces=faces_per_frame,
        params=scene_key(spec, seed),
    )


def ensure_scene(spec: SceneSpec, clips_dir: Path, seed: int, pool_loader) -> tuple[Path, Truth]:
    """The clip and truth for a scene, generated only when absent or made by other params.

    `pool_loader()` returns the FacePool (loaded lazily: cached clips need no FER2013)."""
    key = scene_key(spec, seed)
    # named by their digest: clips made with other parameters (another tool, another seed
    # offset) live beside these instead of overwriting them
    video = clips_dir / f"{spec.name}-{key}.mp4"
    truth_path = clips_dir / f"{spec.name}-{key}.truth.json"
    if video.is_file() and truth_path.is_file():
        truth = Truth.from_json(json.loads(truth_path.read_text()))
        if truth.params == key:
            return video, truth
    # written under temporary names and renamed: a second run at the same time (or one
    # interrupted) never sees half a clip
    tmp_video = video.with_name(f".{video.stem}.{os.getpid()}.mp4")
    truth = render_scene(spec, pool_loader(), seed, tmp_video)
    tmp_truth = truth_path.with_name(f".{truth_path.name}.{os.getpid()}")
    tmp_truth.write_text(json.dumps(truth.to_json()))
    tmp_video.replace(video)
    tmp_truth.replace(truth_path)
    return video, truth


def default_clips_dir(quick: bool, seed: int) -> Path:
    """Where the benchmark caches its clips (outside the repository: derived from FER2013)."""
    from benchmarks.common import CACHE_ROOT

    return CACHE_ROOT / "synthetic_room" / f"clips{'-quick' if quick else ''}-seed{seed}"


class PoolLoader:
    """The FacePool, loaded on first call only (cached clips need no FER2013)."""

    def __init__(self, data: Path, seed: int, log=None) -> None:
        self.data, self.seed, self.log = Path(data), seed, log
        self._pool: FacePool | None = None

    def __call__(self) -> FacePool:
        if self._pool is None:
            if self.log:
                self.log(f"synthetic_room: loading FER2013 PublicTest faces from {self.data}")
            self._pool = load_face_pool(self.data, self.seed)
        return self._pool


def benchmark_clips(
    pool: PoolLoader,
    quick: bool = False,
    seed: int = 0,
    names: list[str] | None = None,
    clips_dir: Path | None = None,
) -> dict[str, tuple[Path, Truth]]:
    """The benchmark's clips, exactly as `python -m benchmarks.synthetic_room` scores them
    (scene k of n: seed + k, the k-th share of the faces), made or taken from the cache.
    Anything tuned on the synthetic room should use these, so it tunes on what is scored."""
    specs = default_scenes(quick)
    all_names = [s.name for s in specs]
    clips_dir = Path(clips_dir) if clips_dir else default_clips_dir(quick, seed)
    out = {}
    for k, spec in enumerate(specs):
        if names is not None and spec.name not in names:
            continue
        out[spec.name] = ensure_scene(
            spec, clips_dir, seed + k, lambda k=k: pool().for_scene(k, len(all_names))
        )
    return out
