#!/usr/bin/env python3
"""Convert Freihaut & Goeritz (2021) into an mpcl study folder (docs/dataset-format.md).

    python3 tools/freihaut_to_study.py <git dir of Freihaut/Freihaut_Goeritz-2021-Study_Files-Mouse> datasets/freihaut2021

Reads the authors' two aggregated files straight from a git checkout (bare or not), at the
commit the bundled folder was made from (override with --commit):

- `Datasets/Manipulation_Check_Data.csv`: per participant and block (high / low stress) the 12
  MDBF mood adjectives (0-4), the SAM ratings after each task, mean heart rate and mean skin
  resistance during each task;
- `Datasets/Aggregated_Mouse_Data.csv`: per participant, block and task the mouse statistics.

Python 3 standard library only. Deterministic: the same input gives byte-identical files.

One row per (participant, block, mouse task):

- `trial`: the block, 1 = high stress, 2 = low stress (the aggregates do not record which block
  came first; the order was random). Both blocks are rated by one MDBF each, so the four task
  windows of a block share the label and always stay on the same side of a split.
- `time`: the mouse task, 0 = PointClick, 1 = DragDrop, 2 = Drawing, 3 = FollowBox (a fixed
  order; the presentation order was random per participant and is not in the aggregates).
- `stimulus`: the block's condition, `high-stress` or `low-stress` (the manipulation every
  participant was exposed to).
- `task`: the task's name (ignored by mpcl; for people reading the files).
- `heart_0`: ln(mean heart rate, bpm) during the task (physiological modality `heart`).
- `eda_0`: ln(mean skin resistance) during the task (physiological modality `eda`; the source
  unit is not stated; a mean <= 0 is treated as missing).
- `mouse_0` .. `mouse_18`: the 19 mouse statistics of the task (behavioral modality `mouse`),
  each as sign(v) * ln(1 + |v|), in the order of MOUSE below.
- the 12 MDBF adjectives (English names, EMOTIONS below): the block's ratings, 0 = "not at all"
  ... 4 = "completely"; schema rule `subtract-minimum` with minimum 0 (p_k = r_k / sum_j r_j).

Windows with a missing (empty, NaN) or non-positive-resistance value are dropped, and the count
is printed; so are windows whose 12 ratings are all 0 (no distribution). Participants not in
both files are left out, and so are participants left with windows of one block only (mpcl's
subject-dependent protocol needs two trials per subject).
"""

import argparse
import csv
import io
import math
import os
import subprocess
import sys

COMMIT = "b21812dc215de6cf1409c8d3b5b1c24547bc8a95"
TASKS = ["PointClick", "DragDrop", "Drawing", "FollowBox"]
# The 19 mouse statistics (column suffixes of Aggregated_Mouse_Data.csv), as in
# tools/freihaut_signal_check.py.
MOUSE = [
    "mouse_dist_", "speed_mean_", "speed_sd_", "pos_accel_mean", "pos_accel_sd",
    "neg_accel_mean", "neg_accel_sd", "pos_jerk_mean", "pos_jerk_sd", "neg_jerk_mean",
    "neg_jerk_sd", "pos_snap_mean", "pos_snap_sd", "neg_snap_mean", "neg_snap_sd",
    "angle_mean_", "angle_sd_", "x_flips_", "y_flips_",
]
# MDBF item (German, as the app stores it) -> emotion name in the study folder. Both poles of the
# three MDBF scales: good-bad mood, awake-tired, calm-restless.
MDBF = [
    ("angespannt", "tense"),
    ("ausgeglichen", "balanced"),
    ("ermattet", "exhausted"),
    ("frisch", "fresh"),
    ("gut", "good"),
    ("nervös", "nervous"),
    ("ruhig", "calm"),
    ("schläfrig", "sleepy"),
    ("unglücklich", "unhappy"),
    ("unzufrieden", "dissatisfied"),
    ("wach", "awake"),
    ("wohl", "well"),
]
EMOTIONS = [name for _, name in MDBF]
BLOCKS = [("HS", 1, "high-stress"), ("LS", 2, "low-stress")]

SCHEMA = """\
# Freihaut & Goeritz (2021), "Using the computer mouse for stress measurement": one row per
# participant, stress block and mouse task. Written by tools/freihaut_to_study.py; see README.md
# and NOTICE.md (GPL-3.0).
name = "freihaut2021"
# The 12 MDBF mood adjectives (German originals in README.md), rated 0-4 once per block.
emotions = [{emotions}]
ignore_columns = ["task"]

[[modality]]
name = "heart"            # ln(mean heart rate during the task)
group = "physiological"
tokens = 1
token_width = 1

[[modality]]
name = "eda"              # ln(mean skin resistance during the task)
group = "physiological"
tokens = 1
token_width = 1

[[modality]]
name = "mouse"            # 19 cursor-movement statistics of the task, signed log
group = "behavioral"
tokens = 19
token_width = 1

[labels]
rule = "subtract-minimum" # 0 = "not at all": p_k = r_k / sum_j r_j; all-zero rows are dropped
minimum = 0
maximum = 4

[missing]
policy = "error"          # the converter already dropped windows with a missing value
"""


def git_show(git_dir, commit, path):
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
        check=True, capture_output=True,
    ).stdout
    return out.decode("utf-8-sig")


def read_table(git_dir, commit, path):
    """Tab-separated with a leading unnamed index column; returns {ParticipantId: {column: text}}."""
    rows = list(csv.reader(io.StringIO(git_show(git_dir, commit, path)), delimiter="\t"))
    header = [fix_mojibake(h) for h in rows[0]]
    table = {}
    for row in rows[1:]:
        if not row:
            continue
        record = dict(zip(header, row))
        table[record["ParticipantId"]] = record
    return table


def fix_mojibake(text):
    """The header's umlauts are UTF-8 encoded twice (`nervÃ¶s`); undo it where that applies."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def number(text):
    """The value as a float, or None when missing or not finite."""
    text = (text or "").strip()
    if text == "" or text.lower() in ("nan", "na", "n/a", "none"):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def fmt(value):
    """9 significant digits: enough for the 32-bit floats mpcl reads (deterministic)."""
    return f"{value:.9g}"


def slog(value):
    return math.copysign(math.log1p(abs(value)), value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("git_dir", help="git directory (bare or .git) of the authors' repository")
    parser.add_argument("out_dir", help="study folder to write (its CSVs and schema.toml are replaced)")
    parser.add_argument("--commit", default=COMMIT, help=f"commit to read (default {COMMIT})")
    args = parser.parse_args()

    manip = read_table(args.git_dir, args.commit, "Datasets/Manipulation_Check_Data.csv")
    mouse = read_table(args.git_dir, args.commit, "Datasets/Aggregated_Mouse_Data.csv")

    if os.path.isdir(args.out_dir):
        # Replace only this script's outputs; README.md, NOTICE.md and LICENSE stay.
        for f in sorted(os.listdir(args.out_dir)):
            if f.endswith(".csv") or f == "schema.toml":
                os.remove(os.path.join(args.out_dir, f))
    os.makedirs(args.out_dir, exist_ok=True)

    participants = sorted({pid[:-3] for pid in manip} & {pid[:-3] for pid in mouse})
    only_manip = sorted({pid[:-3] for pid in manip} - {pid[:-3] for pid in mouse})
    only_mouse = sorted({pid[:-3] for pid in mouse} - {pid[:-3] for pid in manip})

    dropped = {"missing heart rate": 0, "missing or non-positive skin resistance": 0,
               "missing mouse statistic": 0, "missing MDBF rating": 0, "all 12 MDBF ratings 0": 0}
    header = (["trial", "time", "stimulus", "task", "heart_0", "eda_0"]
              + [f"mouse_{i}" for i in range(len(MOUSE))] + EMOTIONS)
    written, windows, subject_ids, single_block = 0, 0, [], []
    for participant in participants:
        rows = []
        for code, trial, stimulus in BLOCKS:
            m, k = manip.get(f"{participant}_{code}"), mouse.get(f"{participant}_{code}")
            if m is None or k is None:
                continue
            for time, task in enumerate(TASKS):
                windows += 1
                hr = number(m.get(f"{task}_mean_HR"))
                res = number(m.get(f"_{task}_Mean_Resistance"))
                stats = [number(k.get(f"{task}_{c}")) for c in MOUSE]
                ratings = [number(m.get(f"MDBF_{item}")) for item, _ in MDBF]
                if hr is None or hr <= 0:
                    dropped["missing heart rate"] += 1
                elif res is None or res <= 0:
                    dropped["missing or non-positive skin resistance"] += 1
                elif any(v is None for v in stats):
                    dropped["missing mouse statistic"] += 1
                elif any(v is None for v in ratings):
                    dropped["missing MDBF rating"] += 1
                elif sum(ratings) == 0:
                    dropped["all 12 MDBF ratings 0"] += 1
                else:
                    assert all(r == int(r) and 0 <= r <= 4 for r in ratings), ratings
                    rows.append([str(trial), str(time), stimulus, task,
                                 fmt(math.log(hr)), fmt(math.log(res))]
                                + [fmt(slog(v)) for v in stats]
                                + [str(int(r)) for r in ratings])
        blocks = sorted({r[0] for r in rows})
        if len(blocks) < 2:
            # One block cannot be split into a training and a test trial (subject-dependent).
            single_block.append((participant, len(rows)))
            continue
        subject = f"p{len(subject_ids) + 1:02d}"
        subject_ids.append((subject, participant))
        with open(os.path.join(args.out_dir, f"{subject}.csv"), "w", newline="",
                  encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
        written += len(rows)

    with open(os.path.join(args.out_dir, "schema.toml"), "w", encoding="utf-8") as f:
        f.write(SCHEMA.format(emotions=", ".join(f'"{e}"' for e in EMOTIONS)))
    none = [p for p, n in single_block if n == 0]
    one = [p for p, n in single_block if n > 0]
    print(f"participants: {len(participants)} in both files "
          f"(only manipulation check: {len(only_manip)}, only mouse data: {len(only_mouse)})")
    print(f"windows: {windows} (participant x block x task), written {written}, "
          f"left out {windows - written}:")
    for reason, n in dropped.items():
        print(f"  {reason}: {n}")
    print(f"  complete windows of participants left with a single block: "
          f"{sum(n for _, n in single_block)} ({len(one)} participants: {', '.join(one)})")
    print(f"participants without any complete window: {len(none)} ({', '.join(none)})")
    print(f"subjects written: {len(subject_ids)}, 2 blocks each; p01..p{len(subject_ids):02d} "
          f"are these source ids (ParticipantId without _HS/_LS), in this order:")
    for subject, participant in subject_ids:
        print(f"  {subject} {participant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
