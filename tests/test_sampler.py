"""The sampler on analytic denoisers: what it must guarantee whatever the model is."""

import torch

from ltx2cli.engine.sampler import State, Stream, euler, noised, sample

DISTILLED = torch.tensor([1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0])


def stream(tokens: int, mask: list[float], seed: int) -> Stream:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(1, tokens, 4, generator=g)
    return Stream(x=clean, clean=clean, mask=torch.tensor([mask]), positions=torch.arange(tokens)[None].float())


def start(video: Stream, audio: Stream, seed: int = 7) -> State:
    g = torch.Generator().manual_seed(seed)
    return State(
        video=noised(video, torch.randn(video.x.shape, generator=g), DISTILLED[0]),
        audio=noised(audio, torch.randn(audio.x.shape, generator=g), DISTILLED[0]),
    )


def test_generated_tokens_reach_the_prediction_and_held_ones_never_move():
    target_v, target_a = torch.full((1, 4, 4), 0.5), torch.full((1, 3, 4), -0.25)
    video = stream(4, [0.0, 1.0, 1.0, 0.2], seed=1)  # token 0: strength-1 image; token 3: strength 0.8
    audio = stream(3, [0.0, 0.0, 0.0], seed=2)  # lip-sync: frozen audio
    state = start(video, audio)
    assert torch.equal(state.video.x[:, 0], video.clean[:, 0]) and torch.equal(state.audio.x, audio.clean)

    steps = []
    out = sample(lambda s, sigma: (target_v, target_a), state, DISTILLED, callback=steps.append)

    assert torch.equal(out.audio.x, audio.clean)  # frozen audio: bit-identical
    assert torch.equal(out.video.x[:, 0], video.clean[:, 0])  # strength-1 keyframe: unchanged
    assert torch.allclose(out.video.x[:, 1:3], target_v[:, 1:3], atol=1e-6)  # generated: reach x0 at sigma 0
    assert torch.allclose(out.video.x[:, 3], target_v[:, 3] * 0.2 + video.clean[:, 3] * 0.8, atol=1e-6)
    assert [s["i"] for s in steps] == list(range(8))
    assert set(steps[0]) == {"i", "sigma", "sigma_next", "denoised", "audio_denoised"}


def test_partial_strength_starts_partly_noised():
    video = stream(2, [1.0, 0.25], seed=3)
    noise = torch.ones(1, 2, 4)
    x = noised(video, noise, torch.tensor(1.0)).x
    assert torch.allclose(x[:, 0], noise[:, 0])
    assert torch.allclose(x[:, 1], 0.25 * noise[:, 1] + 0.75 * video.clean[:, 1])


def test_euler_matches_flow_matching_update():
    x, x0 = torch.tensor([2.0]), torch.tensor([0.5])
    sigma, nxt = torch.tensor(0.8), torch.tensor(0.5)
    # the velocity is (x - x0) / sigma; the step moves by (sigma_next - sigma) * velocity
    assert torch.allclose(euler(x, x0, sigma, nxt), x + (nxt - sigma) * (x - x0) / sigma)
    assert torch.allclose(euler(x, x0, sigma, torch.tensor(0.0)), x0)


def test_deterministic_for_a_seed():
    def model(s, sigma):
        return torch.tanh(s.video.x), torch.tanh(s.audio.x)

    a = sample(model, start(stream(5, [1.0] * 5, 1), stream(2, [1.0] * 2, 2), seed=11), DISTILLED)
    b = sample(model, start(stream(5, [1.0] * 5, 1), stream(2, [1.0] * 2, 2), seed=11), DISTILLED)
    c = sample(model, start(stream(5, [1.0] * 5, 1), stream(2, [1.0] * 2, 2), seed=12), DISTILLED)
    assert torch.equal(a.video.x, b.video.x) and not torch.equal(a.video.x, c.video.x)
