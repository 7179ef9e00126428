"""Third-party libraries' own output, silenced where ltx2 shows its own."""

from __future__ import annotations


def quiet_libraries() -> None:
    """diffusers' / transformers' per-load info lines and progress bars are noise in a CLI with its own progress."""
    import transformers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
