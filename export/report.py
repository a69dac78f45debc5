"""Write the export report: report.json and a markdown table (report.md)."""

from __future__ import annotations

import json
from pathlib import Path


def shipped_report(report: dict) -> dict:
    """The figures of the int8 file as the device runs it (with flip averaging if it is on)."""
    if report.get("flip_average"):
        return report["chosen_int8_flip"]
    return report[f"{report['chosen']}_int8"]


def _row(name: str, r: dict) -> str:
    acc = lambda k: f"{100 * r[k]['accuracy']:.2f}" if k in r else "-"  # noqa: E731
    size = f"{r['size_bytes'] / 1024:.0f} KiB" if "size_bytes" in r else "-"
    lat = r.get("latency_single_face") or []
    lat_s = " / ".join(f"{x['median_ms']:.3f}" for x in lat) or "-"
    agree = r.get("argmax_agreement_with_float", {}).get("PrivateTest")
    agree_s = f"{100 * agree:.1f}" if agree is not None else "-"
    return (
        f"| {name} | {acc('fer2013_PublicTest')} | {acc('fer2013_PrivateTest')} | "
        f"{acc('ferplus_valid')} | {acc('ferplus_test')} | {agree_s} | {size} | {lat_s} |"
    )


def _selection_text(report: dict) -> str:
    sel = report.get("selection")
    if not sel:  # reports written before the rule was recorded
        return "PublicTest accuracy. "
    qat = sel.get("qat_int8")
    qat_s = f"QAT {qat:.4f}" if qat is not None else "QAT not run"
    return f"{sel['rule']} (PTQ {sel['ptq_int8']:.4f}, {qat_s}). "


def markdown(report: dict) -> str:
    lines = [
        f"# Export report ({report['date']})",
        "",
        f"Float model `{report['float_model']}`, labels: {', '.join(report['labels'])}. "
        f"Shipped: **{report['chosen'].upper()} int8**, chosen on PublicTest images by the "
        + _selection_text(report)
        + f"QAT fine-tuning: {report['qat_epochs']} epoch(s). "
        f"Wall time {report['wall_seconds']:.0f} s.",
        "",
        "| model | PublicTest % | PrivateTest % | FER+ valid % | FER+ test % "
        "| argmax agree w/ float (Private) % | file | latency ms/face, 1 / 2 threads |",
        "|---|---|---|---|---|---|---|---|",
        _row("float (Keras)", report["float"]),
        _row("PTQ int8 (LiteRT)", report["ptq_int8"]),
        *([_row("QAT int8 (LiteRT)", report["qat_int8"])] if report.get("qat_int8") else []),
        *(
            [_row(f"{report['chosen'].upper()} int8 + flip averaging", report["chosen_int8_flip"])]
            if "chosen_int8_flip" in report
            else []
        ),
        "",
        f"Flip averaging on the device: **{'on' if report.get('flip_average') else 'off'}** "
        f"(rule `{report.get('flip_average_rule', 'off')}`: auto keeps it only if it raises "
        "the same PublicTest score; it doubles the inferences per face).",
        "",
        "Accuracy is on FER2013 labels (PublicTest, PrivateTest) and FER+ majority votes on "
        "the same images (valid = PublicTest rows, test = PrivateTest rows; rows whose "
        "majority is contempt/unknown/not-a-face excluded). "
        "Latency: median of "
        "300 single-face invocations on the machine that ran the export.",
        "",
        "## Per class, shipped int8 model, PrivateTest",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    chosen = shipped_report(report)["fer2013_PrivateTest"]["per_class"]
    for name, c in chosen.items():
        lines.append(
            f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
            f"{c['support']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
