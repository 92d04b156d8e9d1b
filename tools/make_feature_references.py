#!/usr/bin/env python3
"""Reference values for model::data::features, computed independently with numpy and scipy on the
same inputs, written as JSON for the Rust tests to compare against.

Usage: python tools/make_feature_references.py [OUT]
       (default: data/tests/fixtures/features/reference.json)
Needs: numpy, scipy (pip install numpy scipy).

Definitions (as documented in data/src/features.rs):
- Differential entropy per band: band-pass by zeroing every FFT bin with |f| outside [lo, hi),
  inverse FFT, DE = 0.5 ln(2 pi e var) of the result (variance floored at 1e-12). Here the
  band-passed signal is built explicitly with numpy's ifft; the Rust side uses Parseval instead.
- Window statistics: median, mean, std (ddof 0), min, max of x, diff(x), diff(x, 2); then from the
  one-sided power |rfft(x - mean)|^2 without the DC bin: centroid, spread, normalised entropy
  (scipy.stats.entropy / ln K), dominant frequency (first maximum), 85 % roll-off.
Signals are rounded to float32 first, since the Rust functions take f32.
"""

import json
import os
import sys

import numpy as np
import scipy.stats

BANDS = [("delta", 1, 4), ("theta", 4, 8), ("alpha", 8, 14), ("beta", 14, 31), ("gamma", 31, 49)]
VARIANCE_FLOOR = 1e-12
ROLLOFF = 0.85
RELATIVE, ABSOLUTE = 1e-5, 1e-6


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def differential_entropy(x, rate):
    n = len(x)
    spectrum = np.fft.fft(x)
    freqs = np.abs(np.fft.fftfreq(n, d=1.0 / rate))
    out = []
    for _, lo, hi in BANDS:
        kept = np.where((freqs >= lo) & (freqs < hi), spectrum, 0)
        band = np.fft.ifft(kept).real
        var = max(np.var(band), VARIANCE_FLOOR)
        out.append(0.5 * np.log(2 * np.pi * np.e * var))
    return out


def summary(v):
    return [np.median(v), np.mean(v), np.std(v), np.min(v), np.max(v)]


def spectral(x, rate):
    n = len(x)
    centred = x - np.mean(x)
    power = np.abs(np.fft.rfft(centred)) ** 2
    freqs = np.fft.rfftfreq(n, d=1.0 / rate)
    power, freqs = power[1:], freqs[1:]
    total = power.sum()
    energy = np.sum(x * x) * n
    if len(power) == 0 or total <= 1e-20 * max(energy, np.finfo(float).tiny):
        return [0.0] * 5
    centroid = np.sum(freqs * power) / total
    spread = np.sqrt(np.sum((freqs - centroid) ** 2 * power) / total)
    entropy = scipy.stats.entropy(power) / np.log(len(power)) if len(power) > 1 else 0.0
    dominant = freqs[np.argmax(power)]
    cumulative = np.cumsum(power)
    index = int(np.searchsorted(cumulative, ROLLOFF * total))
    # The reference must not sit on a knife edge that rounding could flip.
    assert abs(cumulative[index] - ROLLOFF * total) > 1e-6 * total
    if index > 0:
        assert abs(cumulative[index - 1] - ROLLOFF * total) > 1e-6 * total
    rolloff = freqs[index]
    order = np.sort(power)
    if len(order) > 1:
        assert order[-1] - order[-2] > 1e-6 * total, "dominant bin must be unambiguous"
    return [centroid, spread, entropy, dominant, rolloff]


def statistics(x, rate):
    return summary(x) + summary(np.diff(x)) + summary(np.diff(x, 2)) + spectral(x, rate)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        "model", "tests", "fixtures", "features", "reference.json"
    )
    rng = np.random.default_rng(2024)
    de_cases = []
    for rate, seconds in [(200.0, 1.0), (128.0, 1.0), (250.0, 1.0), (100.0, 0.8)]:
        t = np.arange(int(rate * seconds)) / rate
        x = (
            3.0 * np.sin(2 * np.pi * 2.0 * t + 0.3)
            + 2.0 * np.sin(2 * np.pi * 6.0 * t)
            + 1.5 * np.sin(2 * np.pi * 10.0 * t + 1.0)
            + 1.0 * np.sin(2 * np.pi * 20.0 * t)
            + 0.5 * np.sin(2 * np.pi * 40.0 * t + 2.0)
            + 0.8 * rng.standard_normal(t.size)
            + 5.0
        )
        x = f32(x)
        de_cases.append(
            {"name": f"eeg_{int(rate)}hz_{len(x)}", "rate": rate, "signal": list(x),
             "expected": differential_entropy(x, rate)}
        )
    stat_cases = []
    t4 = np.arange(20) / 4.0
    eda = f32(2.0 + 0.3 * np.sin(2 * np.pi * 0.2 * t4) + 0.05 * rng.standard_normal(20))
    t64 = np.arange(320) / 64.0
    bvp = f32(40 * np.sin(2 * np.pi * 1.2 * t64) + 8 * rng.standard_normal(320))
    t32 = np.arange(160) / 32.0
    acc = f32(np.round(60 + 6 * np.cos(2 * np.pi * 0.8 * t32) + rng.normal(0, 2, 160)))
    odd = f32(np.cumsum(rng.standard_normal(21)))
    for name, x, rate in [("eda_4hz", eda, 4.0), ("bvp_64hz", bvp, 64.0), ("acc_32hz", acc, 32.0),
                          ("walk_21_samples", odd, 4.2)]:
        stat_cases.append({"name": name, "rate": rate, "signal": list(x), "expected": statistics(x, rate)})
    flat = f32(np.full(20, 0.1))
    stat_cases.append({"name": "flat", "rate": 4.0, "signal": list(flat), "expected": statistics(flat, 4.0)})

    reference = {
        "generator": "tools/make_feature_references.py",
        "tolerance": {"relative": RELATIVE, "absolute": ABSOLUTE,
                      "rule": "|rust - reference| <= absolute + relative * |reference|"},
        "bands": [b[0] for b in BANDS],
        "differential_entropy": de_cases,
        "statistics": stat_cases,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(reference, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
