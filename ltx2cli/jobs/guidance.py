"""A job's guidance resolved: every scale set, diffusers' defaults where the job leaves one unset. The sampler runs
its passes (engine.guidance); the memory plans count its rows (engine.memory.estimate)."""

from __future__ import annotations

from dataclasses import dataclass

from .job import Guidance


@dataclass(frozen=True)
class Scales:
    """Resolved guidance for one render (diffusers' defaults where the spec leaves a value unset)."""

    cfg: float = 1.0
    stg: float = 0.0
    modality: float = 1.0
    rescale: float = 0.0
    audio_cfg: float = 1.0
    audio_stg: float = 0.0
    audio_modality: float = 1.0
    audio_rescale: float = 0.0
    stg_blocks: tuple[int, ...] = ()

    @classmethod
    def from_spec(cls, g: Guidance) -> Scales:
        def pick(audio: float | None, video: float | None, default: float) -> float:
            return float(audio if audio is not None else video if video is not None else default)

        return cls(
            cfg=pick(g.cfg, None, 1.0),
            stg=pick(g.stg, None, 0.0),
            modality=pick(g.modality, None, 1.0),
            rescale=pick(g.rescale, None, 0.0),
            audio_cfg=pick(g.audio_cfg, g.cfg, 1.0),
            audio_stg=pick(g.audio_stg, g.stg, 0.0),
            audio_modality=pick(g.audio_modality, g.modality, 1.0),
            audio_rescale=pick(g.audio_rescale, g.rescale, 0.0),
            stg_blocks=tuple(g.stg_blocks or ()),
        )

    @property
    def uses_cfg(self) -> bool:
        return self.cfg > 1 or self.audio_cfg > 1

    @property
    def uses_stg(self) -> bool:
        return (self.stg > 0 or self.audio_stg > 0) and bool(self.stg_blocks)

    @property
    def uses_modality(self) -> bool:
        return self.modality > 1 or self.audio_modality > 1

    @property
    def most_rows(self) -> int:
        """Rows of the batched forward these scales ask for (`passes` drops STG's on models without perturbable
        attention): what memory is planned for."""
        return 1 + self.uses_cfg + self.uses_stg + self.uses_modality
