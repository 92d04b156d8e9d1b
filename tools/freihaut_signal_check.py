#!/usr/bin/env python3
"""Signal check on Freihaut & Goeritz (2021): do heart rate, skin resistance and mouse features
predict the self-reported emotion distribution better than the label prior?

This is the check that led to *not* bundling that study (see docs/dataset-search.md). It reads
the two aggregated files of the authors' repository straight from a git checkout (bare or not):

    python tools/freihaut_signal_check.py <git dir of Freihaut/Freihaut_Goeritz-2021-Study_Files-Mouse>

Needs numpy, pandas and scikit-learn. Deterministic (fixed seeds, one thread).

Samples: one per (participant, condition, mouse task): 2 conditions (high / low stress) x
4 tasks (PointClick, DragDrop, Drawing, FollowBox). Features: log mean heart rate and log mean
skin resistance during the task (physiological), 19 mouse-movement statistics of the task,
signed log (behavioral). Two label distributions are tried:

- `mdbf`: the 12 MDBF mood adjectives (0-4) rated at the end of each condition, normalised;
  the 4 task windows of a condition share it.
- `sam`: the task's SAM valence and arousal (0-4) spread bilinearly over the four quadrants
  (HV-HA, LV-HA, HV-LA, LV-LA).

References: label prior (mean training distribution) and condition prior (mean training
distribution of the test sample's condition, the analogue of a stimulus prior).
"""

import subprocess
import sys
from io import StringIO

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

TASKS = ["PointClick", "DragDrop", "Drawing", "FollowBox"]
MOUSE = [
    "mouse_dist_", "speed_mean_", "speed_sd_", "pos_accel_mean", "pos_accel_sd",
    "neg_accel_mean", "neg_accel_sd", "pos_jerk_mean", "pos_jerk_sd", "neg_jerk_mean",
    "neg_jerk_sd", "pos_snap_mean", "pos_snap_sd", "neg_snap_mean", "neg_snap_sd",
    "angle_mean_", "angle_sd_", "x_flips_", "y_flips_",
]
EPS = 1e-6


def read(git_dir, path):
    text = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"],
        check=True, capture_output=True,
    ).stdout.decode("utf-8", errors="replace")
    return pd.read_csv(StringIO(text), sep="\t", index_col=0)


def windows(git_dir):
    manip = read(git_dir, "Datasets/Manipulation_Check_Data.csv")
    mouse = read(git_dir, "Datasets/Aggregated_Mouse_Data.csv")
    mdbf = [c for c in manip.columns if c.startswith("MDBF")]
    joined = manip.merge(mouse, on="ParticipantId", suffixes=("", "_mouse"))
    rows = []
    for _, r in joined.iterrows():
        for t, task in enumerate(TASKS):
            resistance = r[f"_{task}_Mean_Resistance"]
            row = {
                "subject": r.ParticipantId[:-3],
                "condition": r.ParticipantId[-2:],
                "task": t,
                "hr": r[f"{task}_mean_HR"],
                "resistance": resistance if resistance > 0 else np.nan,
                "valence": r[f"_SAM_{task}_samValence"],
                "arousal": r[f"_SAM_{task}_samArousal"],
            }
            row.update({f"mouse{i}": r[f"{task}_{c}"] for i, c in enumerate(MOUSE)})
            row.update({f"mdbf{i}": r[c] for i, c in enumerate(mdbf)})
            rows.append(row)
    w = pd.DataFrame(rows).dropna().reset_index(drop=True)
    mdbf_cols = [f"mdbf{i}" for i in range(len(mdbf))]
    return w[w[mdbf_cols].sum(axis=1) > 0].reset_index(drop=True), mdbf_cols


def kl(p, q):
    q = np.clip(q, EPS, None)
    q = q / q.sum(1, keepdims=True)
    terms = np.where(p > 0, p * np.log(np.clip(p, EPS, None) / q), 0.0)
    return float(np.mean(terms.sum(1)))


def subject_standardised(x, subjects):
    """Each subject's features z-scored over that subject's own windows (no labels used)."""
    x = x.copy()
    for s in np.unique(subjects):
        i = subjects == s
        x[i] = (x[i] - x[i].mean(0)) / (x[i].std(0) + EPS)
    return x


def predictions(x_train, y_train, x_test):
    scaler = StandardScaler().fit(x_train)
    a, b = scaler.transform(x_train), scaler.transform(x_test)
    ridge = np.clip(Ridge(alpha=10.0).fit(a, y_train).predict(b), EPS, None)
    forest = RandomForestRegressor(
        n_estimators=200, min_samples_leaf=10, random_state=0, n_jobs=1
    ).fit(a, y_train)
    return {"ridge": ridge / ridge.sum(1, keepdims=True), "random forest": forest.predict(b)}


def evaluate(w, y, variants, splits):
    scores = {}
    for train, test in splits:
        def add(name, q):
            scores.setdefault(name, []).append((kl(y[test], q), len(test)))

        prior = y[train].mean(0)
        add("label prior", np.tile(prior, (len(test), 1)))
        cond = w.condition.values
        add("condition prior", np.array([y[train][cond[train] == c].mean(0) for c in cond[test]]))
        for vname, x in variants.items():
            for mname, q in predictions(x[train], y[train], x[test]).items():
                add(f"{mname}, {vname}", q)
    return {k: np.average([s for s, _ in v], weights=[n for _, n in v]) for k, v in scores.items()}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    w, mdbf_cols = windows(sys.argv[1])
    subjects = w.subject.values
    print(f"{len(w)} windows, {w.subject.nunique()} subjects")
    slog = lambda v: np.sign(v) * np.log1p(np.abs(v))
    phys = np.c_[np.log(w.hr.values), np.log(w.resistance.values)]
    beh = slog(w[[f"mouse{i}" for i in range(len(MOUSE))]].values)
    variants = {
        "raw features": np.c_[phys, beh],
        "per-subject z": subject_standardised(np.c_[phys, beh], subjects),
        "per-subject z, physiological only": subject_standardised(phys, subjects),
        "per-subject z, behavioral only": subject_standardised(beh, subjects),
    }
    v, a = w.valence.values / 4, w.arousal.values / 4
    labels = {
        "mdbf": w[mdbf_cols].values / w[mdbf_cols].values.sum(1, keepdims=True),
        "sam": np.c_[a * v, a * (1 - v), (1 - a) * v, (1 - a) * (1 - v)],
    }
    independent = list(GroupKFold(5).split(w, groups=subjects))
    rng = np.random.default_rng(0)
    first = {s: int(rng.integers(2)) for s in np.unique(subjects)}
    dependent = []
    for fold in range(2):
        test = np.array(
            [w.condition.values[i] == ["HS", "LS"][(first[s] + fold) % 2] for i, s in enumerate(subjects)]
        )
        dependent.append((np.where(~test)[0], np.where(test)[0]))
    for lname, y in labels.items():
        si = evaluate(w, y, variants, independent)
        sd = evaluate(w, y, variants, dependent)
        print(f"\nlabels: {lname}  (mean KL; subject-independent 5 folds | one condition per subject held out)")
        for k in si:
            print(f"  {k:50s} {si[k]:.4f} | {sd[k]:.4f}")


if __name__ == "__main__":
    main()
