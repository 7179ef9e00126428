import numpy as np
import torch
from transformers.audio_utils import spectrogram, window_function

from ltx2cli.media.mel import HOP, N_FFT, log_mel, mel_filters


def test_log_mel_matches_an_independent_stft():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * rng.standard_normal(t.size)]).astype(np.float32)
    ours = log_mel(torch.from_numpy(wave))
    assert ours.shape == (1, 2, 16000 // HOP + 1, 64)
    for c in range(2):
        ref = spectrogram(  # numpy STFT from transformers, not torch.stft
            wave[c], window_function(N_FFT, "hann", periodic=True), frame_length=N_FFT, hop_length=HOP,
            fft_length=N_FFT, power=1.0, center=True, pad_mode="reflect", mel_filters=mel_filters().numpy(),
            mel_floor=1e-5, log_mel=None,
        )  # fmt: skip
        # float32 torch.stft vs float64 numpy: agree to 0.01% of the log value
        np.testing.assert_allclose(ours[0, c].numpy(), np.log(np.maximum(ref, 1e-5)).T, rtol=2e-4, atol=1e-4)


def test_tone_lands_in_its_mel_band_and_silence_hits_the_floor():
    t = torch.arange(16000) / 16000
    mel = log_mel(torch.stack([torch.sin(2 * torch.pi * 1000 * t), torch.zeros_like(t)]))
    fb = mel_filters()
    bin_1k = round(1000 / 8000 * (N_FFT // 2))
    assert mel[0, 0, 50].argmax() == fb[bin_1k].argmax()
    assert torch.allclose(mel[0, 1], torch.log(torch.tensor(1e-5)))
