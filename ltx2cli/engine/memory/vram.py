"""--vram / $LTX2_VRAM: the GPU size a memory plan is chosen for, parsed without torch (the CLI checks it first)."""

from __future__ import annotations

import os
from collections.abc import Mapping

VRAM_ENV = "LTX2_VRAM"
SIZES = ("80", "48", "32", "24")  # the card sizes the plans are named after
MIN_GIB = 8.0  # below this no plan holds even the FP8 transformer's working set


def parse_vram(choice: str | None, env: Mapping[str, str] = os.environ) -> float | None:
    """The GiB to plan for (a "24 GB" card has 24 GiB: an RTX 4090 has 24,564 MiB); None for auto. Without a
    choice, $LTX2_VRAM decides. A value that is neither is a usage error naming where it came from."""
    source = "--vram" if choice else VRAM_ENV
    value = (choice or env.get(VRAM_ENV) or "auto").strip().lower()
    if value == "auto":
        return None
    try:
        gib = float(value.removesuffix("gib").removesuffix("gb").strip())
    except ValueError:
        gib = float("nan")
    if not gib >= MIN_GIB:  # also refuses nan
        from ...errors import UsageError

        raise UsageError(
            f"{source} must be auto or a GPU size in GB of at least {MIN_GIB:g}, such as {', '.join(SIZES)}; "
            f"got {value!r}"
        )
    return gib
