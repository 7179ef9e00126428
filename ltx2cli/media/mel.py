"""The log-mel spectrogram LTX-2's audio VAE encoder reads (lip-sync input).

As in Lightricks' reference front end: 16 kHz stereo, magnitude STFT (n_fft = window = 1024, hop 160,
periodic Hann, centred with reflect padding), 64 Slaney-scale, Slaney-normalised mel bands from 0 Hz
to Nyquist, natural log with a 1e-5 floor. Output (batch, channels, frames, mel bins).
"""

from __future__ import annotations

import functools

import torch

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 160
MEL_BINS = 64
LOG_FLOOR = 1e-5


@functools.cache
def mel_filters(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, mel_bins: int = MEL_BINS) -> torch.Tensor:
    """(n_fft // 2 + 1, mel_bins) Slaney filter bank, from transformers' audio utilities."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=mel_bins,
        min_frequency=0.0,
        max_frequency=sample_rate / 2,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank).float()


def log_mel(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, mel_bins: int = MEL_BINS) -> torch.Tensor:
    """waveform (channels, samples) at `sample_rate` -> log-mel (1, channels, frames, mel_bins), float32."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"log_mel expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz (resample first)")
    window = torch.hann_window(N_FFT, dtype=torch.float32, device=waveform.device)
    spectrum = torch.stft(
        waveform.float(), N_FFT, hop_length=HOP, win_length=N_FFT, window=window,
        center=True, pad_mode="reflect", return_complex=True,
    ).abs()  # fmt: skip
    mel = torch.einsum("cft,fm->ctm", spectrum, mel_filters(sample_rate, N_FFT, mel_bins).to(waveform.device))
    return torch.log(mel.clamp(min=LOG_FLOOR)).unsqueeze(0)
