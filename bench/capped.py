"""Run the ltx2 CLI with this process's GPU memory capped, as a card of that size would hold it.

    python bench/capped.py 24 -- batch jobs.yaml --vram 24 ...     # `full`: no cap

`torch.cuda.set_per_process_memory_fraction` makes the caching allocator refuse beyond the cap (an out-of-memory
error, as on the smaller card); set before anything is allocated. Without a GPU the cap is a no-op.
"""

from __future__ import annotations

import sys

import torch


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: capped.py GIB|full -- LTX2 ARGS")
    cap, args = argv[0], argv[2:]
    if cap != "full" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(float(cap) * 2**30 / total, 1.0), 0)
    from ltx2cli.cli import main as ltx2

    ltx2(args)  # exits with the command's status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
