"""DDRM with and without its cut of uninformative coordinates (``max_noise_ratio``), against steps.

    python benchmarks/ddrm_cut.py --prior gaussian --split test --problems deblur_gauss --ratios inf,1
    python benchmarks/ddrm_cut.py --prior fashion32 --split train --problems deblur_gauss,sr4 \
        --ratios inf,1,.5

A preset of :mod:`steps_sweep` (``--sampler ddrm --vary max_noise_ratio=RATIOS``; ``inf`` disables the cut,
the paper's algorithm); other arguments (--out too) pass through. Writes ddrm_cut_{prior}_{split}.{md,json}
into benchmarks/results/ddrm_cut/ by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from steps_sweep import main as sweep_main  # noqa: E402


def main() -> None:
    argv, ratios = list(sys.argv[1:]), "inf,1"
    if "--ratios" in argv:
        i = argv.index("--ratios")
        ratios = argv[i + 1]
        del argv[i: i + 2]
    sweep_main(["--sampler", "ddrm", "--vary", f"max_noise_ratio={ratios}",
                "--stem", "ddrm_cut_{prior}_{split}", "--out", "benchmarks/results/ddrm_cut", *argv],
               command="python benchmarks/ddrm_cut.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
