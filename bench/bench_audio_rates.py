"""Loading 30 s of audio at every sampling rate from 8 to 192 kHz: time, memory, and the error of our
resampler against scipy's (issue #18).

    PYTHONPATH=. python bench/bench_audio_rates.py [--seconds 30] [--threads 1] [--out rates.json]

For each rate (every 1 kHz from 8 to 192 kHz, and the odd ones: 11,025, 22,050, 44,100, 44,101,
88,200, 176,400, coprime 8,001, 12,345, 16,001, 191,999 ...) a WAV of ``--seconds`` of four tones
(integer Hz inside 75 % of the lower Nyquist frequency, peak 0.8) is written, then
``load_audio(path)`` decodes and resamples it to 16 kHz. Measured:

* time: the wall-clock of ``load_audio`` (decode + resample), torch on ``--threads`` threads;
* memory: the peak resident memory above the level before the call (a thread samples
  ``/proc/self/statm`` every millisecond; glibc is told to give freed blocks back at once, so
  memory a previous call left in the heap does not hide this call's);
* error: max |ours - reference| away from the first and last 50 ms against
  ``scipy.signal.resample`` (FFT: exact for these tones, a whole number of cycles in the clip,
  i.e. the ideal band-limited resampler) and against ``scipy.signal.resample_poly`` (its own Kaiser
  polyphase filter, whose passband ripple dominates that difference).

The worst case of each is printed and written to ``--out`` with every row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # large blocks via mmap, freed at once: RSS tracks live memory
    os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hooked_avllm.inputs import load_audio  # noqa: E402

TARGET = 16000
ODD_RATES = (8001, 11025, 12345, 16001, 22050, 32001, 37800, 44100, 44101, 47999, 88200, 96001, 176400, 191999)
EDGE_SECONDS = 0.05


def rates() -> list[int]:
    return sorted(set(range(8000, 192001, 1000)) | set(ODD_RATES))


def tones(rate: int, seconds: float) -> np.ndarray:
    """Four tones (integer Hz, a whole number of cycles in whole seconds) inside 75 % of the lower
    Nyquist frequency, peak 0.8."""
    band = 0.75 * min(rate, TARGET) / 2
    t = np.arange(int(round(rate * seconds))) / rate
    return sum(0.2 * np.sin(2 * np.pi * round(band * f) * t + k) for k, f in enumerate((0.05, 0.21, 0.47, 0.73)))


class PeakMemory:
    """The peak resident memory (bytes) above the level at entry, sampled every millisecond."""

    page = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra(self) -> int:
        return self.peak - self.start

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _watch(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())


def measure(rate: int, seconds: float, folder: Path) -> dict:
    x = tones(rate, seconds)
    path = folder / f"tones_{rate}.wav"
    soundfile.write(path, x.astype(np.float32), rate, subtype="FLOAT")
    del x
    start = time.perf_counter()
    with PeakMemory() as memory:
        clip = load_audio(path)
    elapsed = time.perf_counter() - start
    path.unlink()
    ours = clip.waveform.double().numpy()
    x = tones(rate, seconds).astype(np.float32).astype(np.float64)  # what the float WAV holds
    n_out = int(round(TARGET * seconds))
    edge = int(EDGE_SECONDS * TARGET)
    inner = slice(edge, n_out - edge)
    ideal = scipy.signal.resample(x, n_out)
    g = math.gcd(rate, TARGET)
    poly = scipy.signal.resample_poly(x, TARGET // g, rate // g)[:n_out]
    return {
        "rate": rate,
        "phases": TARGET // g,
        "seconds": seconds,
        "out_samples": int(ours.shape[0]),
        "time_s": round(elapsed, 4),
        "extra_memory_mb": round(memory.extra / 2**20, 1),
        "input_mb": round(rate * seconds * 4 / 2**20, 1),
        "error_vs_fft": float(np.abs(ours[inner] - ideal[inner]).max()),
        "error_vs_resample_poly": float(np.abs(ours[inner] - poly[inner]).max()),
        "rms_error_vs_fft_db": float(20 * np.log10(np.sqrt(np.mean((ours[inner] - ideal[inner]) ** 2))
                                                   / np.sqrt(np.mean(ideal[inner] ** 2)))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (default: 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--rates", type=int, nargs="*", help="only these rates (default: 8-192 kHz, see above)")
    parser.add_argument("--out", type=Path, help="write every row and the worst cases as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_audio((np.zeros(48000, np.float32), 48000))  # warm-up: imports, first kernels
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for rate in args.rates or rates():
            row = measure(rate, args.seconds, Path(folder))
            rows.append(row)
            print(f"{rate:>7} Hz  {row['phases']:>5} phases  {row['time_s']:7.3f} s  +{row['extra_memory_mb']:7.1f} MB "
                  f"(input {row['input_mb']:6.1f} MB)  max err vs FFT {row['error_vs_fft']:.2e}, "
                  f"vs resample_poly {row['error_vs_resample_poly']:.2e}", flush=True)
    worst = {key: max(rows, key=lambda r: r[key]) for key in
             ("time_s", "extra_memory_mb", "error_vs_fft", "error_vs_resample_poly")}
    print("\nworst cases:")
    for key, row in worst.items():
        print(f"  {key}: {row[key]} at {row['rate']} Hz")
    summary = {"seconds": args.seconds, "threads": args.threads, "n_rates": len(rows), "torch": torch.__version__,
               "worst": worst, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
