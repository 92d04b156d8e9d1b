#!/usr/bin/env python3
"""Write one small synthetic WESAD subject folder in the layout of the real download, so that the
Rust reader is tested on files an independent tool wrote, plus `expected.json` with numbers
computed here by numpy from the very text written (window counts, labels, a few features).

Usage: python tools/make_wesad_fixture.py [OUT_DIR]   (default: data/tests/fixtures/wesad)
Needs: numpy (pip install numpy).

Layout written (as in WESAD; `S97` is a made-up subject):
  OUT_DIR/S97/S97_quest.csv    semicolon-separated: # Subj, # ORDER, # START, # END (minutes.seconds),
                               # PANAS rows (24 items; 26 after TSST), # STAI, # DIM, # SSSQ
  OUT_DIR/S97/S97_E4_Data.zip  ACC.csv BVP.csv EDA.csv TEMP.csv HR.csv IBI.csv tags.csv info.txt;
                               each signal CSV: start unix time, sample rate, then samples
  OUT_DIR/S97/S97_readme.txt
  OUT_DIR/expected.json

The recording lasts 100 s. Conditions (seconds after the start): Base 2-20, TSST 25-40,
Medi 1 45-50 (rated 1 on every PANAS item: skipped), Fun 55-70, Medi 2 75-105 (runs past the end
of the recording: only the windows that fit are kept), sRead and fRead (no PANAS: skipped).
"""

import io
import json
import os
import sys
import zipfile

import numpy as np

SUBJECT = "S97"
START = 1495437325.0
DURATION = 100
RATES = {"EDA": 4, "BVP": 64, "TEMP": 4, "ACC": 32}
WINDOW, HOP = 5, 1

# name, start, end (as written, minutes.seconds), start and end in seconds.
CONDITIONS = [
    ("Base", "0.02", "0.2", 2, 20),
    ("TSST", "0.25", "0.40", 25, 40),
    ("Medi 1", "0.45", "0.5", 45, 50),
    ("Fun", "0.55", "1.10", 55, 70),
    ("Medi 2", "1.15", "1.45", 75, 105),
    ("sRead", "1.20", "1.30", 80, 90),
    ("fRead", "1.32", "1.38", 92, 98),
]

ITEMS = [
    "Active", "Distressed", "Interested", "Inspired", "Annoyed", "Strong", "Guilty", "Scared",
    "Hostile", "Excited", "Proud", "Irritable", "Enthusiastic", "Ashamed", "Alert", "Nervous",
    "Determined", "Attentive", "Jittery", "Afraid", "Stressed", "Frustrated", "Happy", "Sad",
]


def panas_rows(rng):
    rows = []
    for name, *_ in CONDITIONS[:5]:
        if name == "Medi 1":
            scores = [1] * 24
        else:
            scores = [int(v) for v in rng.integers(1, 6, size=24)]
        if name == "TSST":
            # Angry and Irritated are asked only here, between Happy and Sad.
            written = scores[:23] + [5, 4] + scores[23:]
        else:
            written = scores
        rows.append((name, scores, written))
    return rows


def quest_text(rows) -> str:
    pad = ";;;;"
    lines = [f"# Subj;{SUBJECT}{pad}"]
    lines.append("# ORDER;" + ";".join(c[0] for c in CONDITIONS) + pad)
    lines.append("# START;" + ";".join(c[1] for c in CONDITIONS) + pad)
    lines.append("# END;" + ";".join(c[2] for c in CONDITIONS) + pad)
    lines.append(";;;;;;;" + pad)
    for _, _, written in rows:
        lines.append("# PANAS;" + ";".join(str(v) for v in written) + pad)
    for _ in rows:
        lines.append("# STAI;1;2;3;2;1;3" + pad)
    for _ in rows:
        lines.append("# DIM;5;3" + pad)
    lines.append("# SSSQ;2;3;2;4;1;2" + pad)
    return "\n".join(lines) + "\n"


def signals(rng):
    t4 = np.arange(DURATION * 4) / 4.0
    t64 = np.arange(DURATION * 64) / 64.0
    t32 = np.arange(DURATION * 32) / 32.0
    eda = 2.0 + 0.3 * np.sin(2 * np.pi * 0.05 * t4) + 0.02 * rng.standard_normal(t4.size)
    bvp = 40 * np.sin(2 * np.pi * 1.2 * t64) + 5 * rng.standard_normal(t64.size)
    temp = 33.0 + 0.01 * t4 + 0.005 * rng.standard_normal(t4.size)
    acc = np.stack(
        [
            np.round(10 * np.sin(2 * np.pi * 0.7 * t32) + rng.normal(0, 2, t32.size)),
            np.round(-20 + rng.normal(0, 3, t32.size)),
            np.round(60 + 4 * np.cos(2 * np.pi * 0.3 * t32) + rng.normal(0, 1, t32.size)),
        ],
        axis=1,
    )
    return {"EDA": eda, "BVP": bvp, "TEMP": temp, "ACC": acc}


def e4_csv(name: str, values: np.ndarray) -> str:
    rate = RATES[name]
    if values.ndim == 1:
        head = f"{START:.6f}\n{rate:.6f}\n"
        body = "".join(f"{v:.6f}\n" for v in values)
    else:
        head = ", ".join([f"{START:.6f}"] * 3) + "\n" + ", ".join([f"{rate:.6f}"] * 3) + "\n"
        body = "".join(",".join(str(int(v)) for v in row) + "\n" for row in values)
    return head + body


def parse_back(text: str, columns: int) -> np.ndarray:
    """The samples exactly as a reader of the text sees them (rows 3 onwards)."""
    rows = [line for line in text.splitlines()[2:] if line.strip()]
    data = np.array([[float(v) for v in line.split(",")] for line in rows])
    data = data.astype(np.float32).astype(np.float64)  # the reader keeps f32 samples
    return data if columns > 1 else data[:, 0]


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("model", "tests", "fixtures", "wesad")
    folder = os.path.join(out, SUBJECT)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(97)
    rows = panas_rows(rng)
    with open(os.path.join(folder, f"{SUBJECT}_quest.csv"), "w", newline="\n") as f:
        f.write(quest_text(rows))
    with open(os.path.join(folder, f"{SUBJECT}_readme.txt"), "w") as f:
        f.write("### Personal information ###\nAge: 0\n\n### Additional notes ###\nSynthetic fixture.\n")

    texts = {name: e4_csv(name, values) for name, values in signals(rng).items()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ["ACC", "BVP", "EDA", "TEMP"]:
            z.writestr(f"{name}.csv", texts[name])
        z.writestr("HR.csv", f"{START + 10:.6f}\n1.000000\n" + "70.0\n" * 90)
        z.writestr("IBI.csv", f"{START:.6f}, IBI\n1.0,0.8\n")
        z.writestr("tags.csv", "")
        z.writestr("info.txt", "Synthetic E4 session for tests.\n")
    with open(os.path.join(folder, f"{SUBJECT}_E4_Data.zip"), "wb") as f:
        f.write(buffer.getvalue())

    data = {name: parse_back(texts[name], 3 if name == "ACC" else 1) for name in texts}
    magnitude = np.sqrt((data["ACC"] ** 2).sum(axis=1))

    def window(name, start):
        rate = RATES["ACC" if name == "ACC_MAG" else name]
        first = int(round(start * rate))
        n = WINDOW * rate
        source = magnitude if name == "ACC_MAG" else data[name]
        if first + n > len(source):
            return None
        return source[first : first + n]

    expected = {"subject": SUBJECT, "conditions": []}
    panas = {name: scores for name, scores, _ in rows}
    for trial, (name, _, _, start, end) in enumerate(CONDITIONS):
        entry = {"trial": trial, "name": name}
        scores = panas.get(name)
        if scores is None:
            entry["skipped"] = "no PANAS"
        elif all(s == 1 for s in scores):
            entry["skipped"] = "all items 1"
        else:
            shifted = np.array(scores, dtype=np.float64) - 1.0
            entry["label"] = list(shifted / shifted.sum())
            starts = [start + w * HOP for w in range(int((end - start - WINDOW) // HOP) + 1)]
            kept = [s for s in starts if window("BVP", s) is not None and window("ACC", s) is not None
                    and window("EDA", s) is not None]
            entry["windows"] = len(kept)
            first = kept[0]
            entry["first_window"] = {
                "eda_mean": float(np.mean(window("EDA", first))),
                "eda_std": float(np.std(window("EDA", first))),
                "bvp_median": float(np.median(window("BVP", first))),
                "temp_max": float(np.max(window("TEMP", first))),
                "acc_x_min": float(np.min(window("ACC", first)[:, 0])),
                "acc_magnitude_max": float(np.max(window("ACC_MAG", first))),
                "bvp_diff1_mean": float(np.mean(np.diff(window("BVP", first)))),
            }
        expected["conditions"].append(entry)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {folder} and {os.path.join(out, 'expected.json')}")


if __name__ == "__main__":
    main()
