"""Average the weights of several checkpoints of one model into one shippable checkpoint.

Usage: ``python scripts/average_checkpoints.py OUT.pt A.pt B.pt [...] [--weights WA,WB,...]``

Uniform: the snapshots should come from the late part of one run (``metasr-train --snapshot-every
N`` keeps them in the run folder's ``snapshots/``). ``--weights 0.7,0.3`` (one per checkpoint,
summing to 1) interpolates between a model and a continuation of it; see
``metasr.training.checkpoint.average_checkpoints``. OUT must be new; it is written atomically.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from metasr.core.atomic import atomic_writer
from metasr.core.errors import CheckpointError
from metasr.training.checkpoint import average_checkpoints


def main(argv: list[str]) -> int:
    weights = None
    if "--weights" in argv:
        at = argv.index("--weights")
        text = argv[at + 1] if at + 1 < len(argv) else ""
        argv = argv[:at] + argv[at + 2 :]
        try:
            weights = [float(w) for w in text.split(",")]
        except ValueError:
            print(f"average_checkpoints: --weights {text!r} is not numbers separated by commas", file=sys.stderr)
            return 2
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out, inputs = Path(argv[0]), [Path(a) for a in argv[1:]]
    if out.exists() or out.resolve() in {p.resolve() for p in inputs}:
        print(f"average_checkpoints: {out} exists; name a new file", file=sys.stderr)
        return 2
    try:
        ckpt = average_checkpoints(inputs, weights)
    except CheckpointError as e:
        print(f"average_checkpoints: {e}", file=sys.stderr)
        return 2
    try:
        with atomic_writer(out) as f:
            torch.save(ckpt, f)
    except OSError as e:  # OutputError included: its message names the path and what to do
        print(f"average_checkpoints: {e}", file=sys.stderr)
        return 2
    how = f", weights {weights}" if weights is not None else ""
    print(f"average_checkpoints: {len(inputs)} checkpoints (steps {ckpt['training']['averaged']}{how}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
