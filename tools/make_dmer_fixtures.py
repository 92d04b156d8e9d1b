#!/usr/bin/env python3
"""Write small DMER-layout MAT v5 files with scipy, so that the Rust reader is tested on files an
independent tool wrote (never only on files its own code wrote).

Usage: python tools/make_dmer_fixtures.py [OUT_DIR]   (default: data/tests/fixtures)
Needs: numpy, scipy (pip install numpy scipy).

Writes
  OUT_DIR/dmer/1.mat   6 rows, `vids` as a 6 x 1 column, uncompressed
  OUT_DIR/dmer/2.mat   6 rows, `vids` as a 1 x 6 row, zlib-compressed (MAT v7 style)
  OUT_DIR/dmer_corrupt/wrong_width.mat   `feas` is 6 x 912 (the corrupt files other than
                                         truncated.mat are compressed, to stay small)
  OUT_DIR/dmer_corrupt/missing_feas.mat  no `feas`
  OUT_DIR/dmer_corrupt/zero_label.mat    clip 1 of `dis_label` is all zeros (and has rows)
  OUT_DIR/dmer_corrupt/truncated.mat     the first half of a valid file
  OUT_DIR/dmer_corrupt/bad_vids.mat      a clip index (3) beyond the 3 rows of `dis_label`

Feature values follow a formula the tests recompute: feas[r, c] = 1000 * subject + 10 * r + c / 1000.
Labels: dis_label[clip, k] = clip + k + 1 (subject 1) or 10 - k (subject 2); normalised per clip.
"""

import io
import os
import sys

import numpy as np
import scipy.io

N_COLUMNS = 913


def feas(subject: int, rows: int, cols: int = N_COLUMNS) -> np.ndarray:
    r = np.arange(rows, dtype=np.float64)[:, None]
    c = np.arange(cols, dtype=np.float64)[None, :]
    return 1000.0 * subject + 10.0 * r + c / 1000.0


def labels(subject: int, clips: int = 3) -> np.ndarray:
    k = np.arange(10, dtype=np.float64)[None, :]
    clip = np.arange(clips, dtype=np.float64)[:, None]
    if subject == 1:
        return clip + k + 1.0
    return np.repeat(10.0 - k, clips, axis=0)


def save(path: str, variables: dict, compress: bool = False) -> None:
    scipy.io.savemat(path, variables, format="5", do_compression=compress, oned_as="column")


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("model", "tests", "fixtures")
    good = os.path.join(out, "dmer")
    bad = os.path.join(out, "dmer_corrupt")
    os.makedirs(good, exist_ok=True)
    os.makedirs(bad, exist_ok=True)

    # Subject 1: clips interleaved so that `time` counts rows within each clip.
    vids1 = np.array([[0.0], [0.0], [1.0], [2.0], [2.0], [1.0]])
    save(os.path.join(good, "1.mat"), {"feas": feas(1, 6), "vids": vids1, "dis_label": labels(1)})
    # Subject 2: vids stored as a row vector, file compressed.
    vids2 = np.array([[2.0, 2.0, 0.0, 0.0, 1.0, 1.0]])
    save(
        os.path.join(good, "2.mat"),
        {"feas": feas(2, 6), "vids": vids2, "dis_label": labels(2)},
        compress=True,
    )

    save(
        os.path.join(bad, "wrong_width.mat"),
        {"feas": feas(3, 6, N_COLUMNS - 1), "vids": vids1, "dis_label": labels(1)},
        compress=True,
    )
    save(os.path.join(bad, "missing_feas.mat"), {"vids": vids1, "dis_label": labels(1)})
    zero = labels(1)
    zero[1, :] = 0.0
    save(
        os.path.join(bad, "zero_label.mat"),
        {"feas": feas(4, 6), "vids": vids1, "dis_label": zero},
        compress=True,
    )
    out_of_range = vids1.copy()
    out_of_range[4, 0] = 3.0
    save(
        os.path.join(bad, "bad_vids.mat"),
        {"feas": feas(5, 6), "vids": out_of_range, "dis_label": labels(1)},
        compress=True,
    )
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"feas": feas(6, 6), "vids": vids1, "dis_label": labels(1)}, format="5")
    whole = buffer.getvalue()
    with open(os.path.join(bad, "truncated.mat"), "wb") as f:
        f.write(whole[: len(whole) // 2])

    # Read the good files back with scipy as a check on this script itself.
    for name in ("1.mat", "2.mat"):
        m = scipy.io.loadmat(os.path.join(good, name))
        assert m["feas"].shape == (6, N_COLUMNS), m["feas"].shape
        assert m["dis_label"].shape == (3, 10)
    print(f"wrote DMER fixtures under {out}")


if __name__ == "__main__":
    main()
