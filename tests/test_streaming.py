"""Tests for long_video_gan/streaming.py: windowed generation equals the one-shot generators and the original
generate.py's computation."""

import pytest
import torch

from long_video_gan import generator_lres, generator_sres, streaming
from torch_utils.ops import fast_cpu

# ----------------------------------------------------------------------------
# Helpers.


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one intra-op thread for tiny tensors


def tiny_lres(seed: int = 0, bias_std: float = 0.05, **overrides) -> torch.nn.Module:
    """Tiny random low-res G with non-zero biases (zero biases would hide errors in the zero borders)."""
    torch.manual_seed(seed)
    G = generator_lres.VideoGenerator(**{**generator_lres.TINY_KWARGS, **overrides}).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed + 1)
    for name, param in G.named_parameters():
        if name.endswith("bias") or name.endswith("bias_0") or name.endswith("bias_1"):
            param.add_(torch.randn(param.shape, generator=gen) * bias_std)
    return G


def one_shot(G: torch.nn.Module, seq_length: int, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return G(1, seq_length, generator_emb=torch.Generator().manual_seed(seed))


def streamed(G: torch.nn.Module, seq_length: int, seed: int, window: int, **kwargs) -> torch.Tensor:
    noise = streaming.draw_lres_noise(G, 1, seq_length, torch.Generator().manual_seed(seed))
    streamer = streaming.LresStreamer(G, noise, seq_length, **kwargs)
    chunks = list(streamer.iter_chunks(0, seq_length, window))
    assert all(c.shape[2] == window for c in chunks[:-1])
    return torch.cat(chunks, dim=2)


@pytest.fixture(scope="module")
def G_tiny():
    return tiny_lres()


# ----------------------------------------------------------------------------
# Bookkeeping.


def test_plan_matches_spec_examples():
    G = tiny_lres()
    plan = streaming.make_lres_plan(G, 128)
    assert plan.in_lengths == (20, 24, 32, 48, 80, 144)
    assert plan.out_lengths == (24, 32, 48, 80, 144, 128)
    assert plan.level_lengths == (640, 320, 160, 80, 40, 20)
    assert plan.levels == (5, 4, 3, 2, 1, 0)
    assert plan.crop_starts == (8,) * 6
    assert plan.halos == (2,) * 6
    # L=100: latent lengths [20, 20, 23, 29, 41, 66, 116, 100 x 5] (VideoGenerator.compute_latent_lengths).
    plan = streaming.make_lres_plan(G, 100)
    assert plan.in_lengths == (20, 23, 29, 41, 66, 116)
    # L=17: the 544-sample full-rate latent is cropped to 17 starting at 263.
    plan = streaming.make_lres_plan(G, 17)
    assert plan.level_lengths[0] == 544 and plan.spatial_latent_start == 263
    assert plan.noise_length == 544 + G.temporal_emb.blur_filters.shape[-1] - 1


def test_plan_agrees_with_generator_bookkeeping():
    G = tiny_lres()
    for L in [1, 2, 15, 16, 17, 31, 32, 33, 100, 301, 1000, 4097]:
        plan = streaming.make_lres_plan(G, L)
        T_in, outs = G.compute_seq_lengths(L)
        assert (plan.in_lengths[0], list(plan.out_lengths)) == (T_in, outs)
        latent_lengths = G.compute_latent_lengths(L)
        assert list(plan.in_lengths) == latent_lengths[1:7]


def test_plan_uses_the_generators_own_bookkeeping(monkeypatch):
    # The plan reads G.compute_seq_lengths instead of re-deriving it: a generator with other lengths gets its own.
    G = tiny_lres()
    own = G.compute_seq_lengths
    monkeypatch.setattr(G, "compute_seq_lengths", lambda L: (own(L)[0] + 2, own(L)[1]), raising=False)
    assert streaming.make_lres_plan(G, 100).in_lengths[0] == own(100)[0] + 2
    with pytest.raises(ValueError, match="seq_length"):  # Its check of the length is the only one.
        streaming.make_lres_plan(tiny_lres(), 0)


def test_stream_video_builds_one_plan_and_checks_before_drawing(monkeypatch):
    G_lres, G_sres = tiny_pair()
    plans = []
    make_plan = streaming.make_lres_plan
    monkeypatch.setattr(streaming, "make_lres_plan", lambda G, L: plans.append(L) or make_plan(G, L))
    chunks = list(streaming.stream_video(G_lres, G_sres, num_frames=5, generator=torch.Generator().manual_seed(0)))
    assert plans == [streaming.original_lres_length(5, G_sres.temporal_context)]
    assert sum(c.video.shape[2] for c in chunks) == 5
    # Bad arguments fail at the call, before a random number is drawn.
    bad = [dict(num_frames=0), dict(num_frames=2.0), dict(window=0), dict(segment_length=0), dict(batch_size=0)]
    for kwargs in bad:
        gen = torch.Generator().manual_seed(0)
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=name):
            streaming.stream_video(G_lres, G_sres, generator=gen, **{"num_frames": 5, **kwargs})
        assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state()), name


def test_original_lres_length():
    assert streaming.original_lres_length(301) == 304
    assert streaming.original_lres_length(301, temporal_context=4) == 312
    assert streaming.original_lres_length(16) == 16
    assert streaming.original_lres_length(1, 4) == 24
    with pytest.raises(ValueError, match="num_frames"):
        streaming.original_lres_length(0)


def test_window_cost_does_not_grow_with_length():
    # Memory is flat: the ranges a window touches depend on the window size, not on the video length.
    G = tiny_lres()
    widths = []
    for L in [1_000, 100_000, 10_000_000]:
        noise = torch.zeros(1, 1, streaming.make_lres_plan(G, L).noise_length)
        s = streaming.LresStreamer(G, noise, L)
        in_ranges, _, level_ranges = s._plan_window(L // 2, L // 2 + 64)
        widths.append([b - a for a, b in in_ranges + level_ranges])
    # Equal up to the rounding of the window's position at each level (one coarse frame is 32 full-rate frames).
    for other in widths[1:]:
        assert all(abs(a - b) <= 2 + b // 16 for a, b in zip(widths[0], other)), widths
    assert max(max(w) for w in widths) < 64 + 1000


# ----------------------------------------------------------------------------
# Noise and embedding.


def test_noise_is_drawn_like_the_one_shot_path(G_tiny):
    L = 45
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    emb = G_tiny.sample_temporal_emb(1, L, generator=gen_a)
    noise = streaming.draw_lres_noise(G_tiny, 1, L, gen_b)
    assert torch.equal(streaming.filter_noise(G_tiny.temporal_emb, noise), emb)
    # Both consumed the generator identically: the next draws agree.
    assert torch.equal(torch.randn(5, generator=gen_a), torch.randn(5, generator=gen_b))
    # A window of the embedding needs only the matching noise slice.
    K = G_tiny.temporal_emb.blur_filters.shape[-1]
    part = streaming.filter_noise(G_tiny.temporal_emb, noise[:, :, 100 : 130 + K - 1])
    assert torch.equal(part, emb[:, :, 100:130])


# ----------------------------------------------------------------------------
# Streamed low-res video == one-shot video.


@pytest.mark.parametrize(
    "seq_length, windows",
    [(1, [1, 4]), (17, [1, 4, 16, 17, 100]), (301, [7, 64, 301]), (1000, [100, 333])],
)
def test_streamed_lres_equals_one_shot(G_tiny, seq_length, windows):
    ref = one_shot(G_tiny, seq_length, seed=seq_length)
    assert ref.shape == (1, 3, seq_length, 36, 64)
    assert ref.abs().max() > 0.01  # Not a degenerate all-zero video.
    for window in windows:
        out = streamed(G_tiny, seq_length, seed=seq_length, window=window)
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= 1e-5, (seq_length, window)


def test_streamed_lres_equals_one_shot_with_extra_margin(G_tiny):
    ref = one_shot(G_tiny, 77, seed=5)
    out = streamed(G_tiny, 77, seed=5, window=10, margin=3)
    assert (out - ref).abs().max().item() <= 1e-5


def test_latent_groups_do_not_change_values(G_tiny):
    L = 120
    ref = one_shot(G_tiny, L, seed=L)
    noise = streaming.draw_lres_noise(G_tiny, 1, L, torch.Generator().manual_seed(L))
    s = streaming.LresStreamer(G_tiny, noise, L)
    for latent_window in [1, 40, 10_000]:  # One group per window, groups of 3 windows (45 frames), one group.
        out = torch.cat(list(s.iter_chunks(0, L, 15, latent_window=latent_window)), dim=2)
        assert (out - ref).abs().max().item() <= 1e-5, latent_window
    with pytest.raises(ValueError, match="frame range"):
        s.latent_levels(0, 121)


def test_random_access_ranges(G_tiny):
    L = 150
    ref = one_shot(G_tiny, L, seed=9)
    noise = streaming.draw_lres_noise(G_tiny, 1, L, torch.Generator().manual_seed(9))
    s = streaming.LresStreamer(G_tiny, noise, L)
    for start, stop in [(0, 1), (149, 150), (33, 34), (60, 97), (0, 150)]:
        assert (s.render(start, stop) - ref[:, :, start:stop]).abs().max().item() <= 1e-5, (start, stop)


def test_batch_streaming_equals_one_shot_batch():
    G = tiny_lres(seed=4, out_height=18, out_width=32)
    with torch.no_grad():
        ref = G(2, 40, generator_emb=torch.Generator().manual_seed(0))
    noise = streaming.draw_lres_noise(G, 2, 40, torch.Generator().manual_seed(0))
    s = streaming.LresStreamer(G, noise, 40)
    out = torch.cat(list(s.iter_chunks(0, 40, 9)), dim=2)
    assert (out - ref).abs().max().item() <= 1e-5


def test_other_temporal_padding_and_kernel():
    # The bookkeeping is derived from the network, not hard-coded to the release's padding 8 and kernel 3.
    for overrides in [dict(temporal_padding=3), dict(temporal_ksize=5), dict(temporal_padding=0)]:
        G = tiny_lres(seed=2, out_height=18, out_width=32, **overrides)
        for L in [5, 45]:
            ref = one_shot(G, L, seed=L)
            for window in [3, 16]:
                out = streamed(G, L, seed=L, window=window)
                assert (out - ref).abs().max().item() <= 1e-5, (overrides, L, window)


@pytest.mark.slow
def test_streamed_lres_equals_one_shot_release_size():
    torch.manual_seed(0)
    G = generator_lres.VideoGenerator().eval().requires_grad_(False)
    L = 301
    ref = one_shot(G, L, seed=1)
    noise = streaming.draw_lres_noise(G, 1, L, torch.Generator().manual_seed(1))
    s = streaming.LresStreamer(G, noise, L)
    # The start, an interior window and the end (all frames would double the runtime).
    for start, stop in [(0, 24), (140, 164), (277, 301)]:
        assert (s.render(start, stop) - ref[:, :, start:stop]).abs().max().item() <= 1e-5, (start, stop)


# ----------------------------------------------------------------------------
# Super-res over the low-res stream.


def tiny_pair(seed: int = 0):
    torch.manual_seed(seed)
    G_sres = generator_sres.VideoGenerator(**generator_sres.TINY_KWARGS).eval().requires_grad_(False)
    G_lres = tiny_lres(seed + 1, out_height=G_sres.lr_height, out_width=G_sres.lr_width)
    return G_lres, G_sres


def original_generate(G_lres, G_sres, num_frames: int, seed: int):
    """The original generate.py's computation: one-shot lres, then 16-frame sres segments."""
    gen = torch.Generator().manual_seed(seed)
    lr_len = -(-num_frames // 16) * 16 + 2 * G_sres.temporal_context
    with torch.no_grad():
        lr = G_lres(1, lr_len, generator_emb=gen)
        hr = torch.cat(list(G_sres.sample_video_segments(lr, 16, generator_z=gen)), dim=2)
    return lr, hr[:, :, :num_frames]


@pytest.mark.parametrize(
    "num_frames, window, segment_length, dtype", [(5, 3, 16, None), (21, 16, 4, torch.float32), (21, 7, 1, None)]
)
def test_streamed_sres_equals_one_shot(num_frames, window, segment_length, dtype):
    G_lres, G_sres = tiny_pair()
    ctx = G_sres.temporal_context
    lr_ref, hr_ref = original_generate(G_lres, G_sres, num_frames, seed=7)
    chunks = list(
        streaming.stream_video(
            G_lres,
            G_sres,
            num_frames=num_frames,
            generator=torch.Generator().manual_seed(7),
            window=window,
            segment_length=segment_length,
            dtype=dtype,
        )
    )
    assert [c.start for c in chunks] == list(range(0, num_frames, segment_length))
    hr = torch.cat([c.video for c in chunks], dim=2)
    lr = torch.cat([c.lres for c in chunks], dim=2)
    assert hr.shape == hr_ref.shape == (1, 3, num_frames, G_sres.hr_height, G_sres.hr_width)
    assert (hr - hr_ref).abs().max().item() <= 1e-5
    assert (lr - lr_ref[:, :, ctx : ctx + num_frames]).abs().max().item() <= 1e-5


def test_dtype_bf16_acts_while_the_chunks_are_computed():
    # dtype=torch.bfloat16 is generate.py's --dtype bf16: fp32 activations, CPU convolutions in bfloat16, scoped to the
    # computation of each chunk (the process-wide setting is float32 between chunks and after).
    G_lres, G_sres = tiny_pair()
    ctx = G_sres.temporal_context

    def video(dtype):
        chunks = streaming.stream_video(
            G_lres, G_sres, num_frames=6, generator=torch.Generator().manual_seed(7), window=5, dtype=dtype
        )
        parts, caller = [], fast_cpu.get_conv_dtype()
        for chunk in chunks:
            assert fast_cpu.get_conv_dtype() == caller  # The caller's setting between chunks.
            parts.append(chunk.video)
        return torch.cat(parts, dim=2)

    # The same computation by hand: strict fp32 (fp16 layers off) inside a process-wide bfloat16 setting.
    gen = torch.Generator().manual_seed(7)
    L = streaming.original_lres_length(6, ctx)
    noise = streaming.draw_lres_noise(G_lres, 1, L, gen)
    z = G_sres.sample_latent_z(1, generator_z=gen)
    with fast_cpu.conv_dtype(torch.bfloat16):
        lr = streaming.LresStreamer(G_lres, noise, L, dtype=torch.float32).iter_chunks(0, 6 + 2 * ctx, 5)
        ref = torch.cat([hr for hr, _ in streaming.iter_sres_chunks(G_sres, lr, z, 6, force_fp32=True)], dim=2)
    bf16 = video(torch.bfloat16)
    assert torch.equal(bf16, ref)
    with fast_cpu.conv_dtype(torch.bfloat16):  # An explicit float32 wins over the process-wide setting.
        fp32 = video(torch.float32)
    assert fast_cpu.get_conv_dtype() == torch.float32
    assert 0 < (bf16 - fp32).abs().max().item() < 0.1
    assert torch.equal(fp32, video(None))  # On the CPU the generators' defaults are fp32.
    with pytest.raises(ValueError, match="dtype must be"):
        streaming.stream_video(G_lres, num_frames=3, dtype=torch.float16)
    with fast_cpu.disabled(), pytest.raises(ValueError, match="fast CPU paths are off"):
        streaming.stream_video(G_lres, num_frames=3, dtype=torch.bfloat16)


def test_stream_video_lres_only_matches_original_length():
    # Without sres the original rendered ceil(len/16)*16 frames; the stream yields its first `num_frames`.
    G = tiny_lres(seed=3, out_height=18, out_width=32)
    ref = one_shot(G, 32, seed=11)
    chunks = list(streaming.stream_video(G, num_frames=20, generator=torch.Generator().manual_seed(11), window=6))
    assert [c.start for c in chunks] == [0, 6, 12, 18]
    video = torch.cat([c.video for c in chunks], dim=2)
    assert video.shape[2] == 20
    assert (video - ref[:, :, :20]).abs().max().item() <= 1e-5
    assert all(c.lres is c.video for c in chunks)


def test_noise_is_drawn_when_stream_video_is_called():
    G = tiny_lres(seed=3, out_height=18, out_width=32)
    gen = torch.Generator().manual_seed(0)
    streaming.stream_video(G, num_frames=20, generator=gen)  # Not consumed.
    expected = torch.Generator().manual_seed(0)
    streaming.draw_lres_noise(G, 1, 32, expected)
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=expected))


# ----------------------------------------------------------------------------
# Errors name the bad input.


def test_errors_name_the_bad_input(G_tiny):
    noise = streaming.draw_lres_noise(G_tiny, 1, 20, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="noise must have shape"):
        streaming.LresStreamer(G_tiny, noise[:, :, :-1], 20)
    with pytest.raises(ValueError, match="seq_length"):
        streaming.make_lres_plan(G_tiny, 0)
    s = streaming.LresStreamer(G_tiny, noise, 20)
    with pytest.raises(ValueError, match="frame range"):
        s.render(5, 21)
    with pytest.raises(ValueError, match="frame range"):
        s.render(5, 5)
    with pytest.raises(ValueError, match="window"):
        next(s.iter_chunks(0, 20, 0))
    with pytest.raises(ValueError, match="num_frames"):
        streaming.stream_video(G_tiny, num_frames=0)
    with pytest.raises(ValueError, match="batch_size"):
        streaming.draw_lres_noise(G_tiny, 0, 20)
    with pytest.raises(ValueError, match="margin"):
        streaming.LresStreamer(G_tiny, noise, 20, margin=-1)


@pytest.mark.gpu
def test_streamed_lres_equals_one_shot_on_cuda():
    # Noise is drawn from a CUDA generator on the generator's device, as the original did; strict fp32 (TF32 off).
    G = tiny_lres().cuda()
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            ref = G(1, 301, generator_emb=torch.Generator("cuda").manual_seed(0))
        noise = streaming.draw_lres_noise(G, 1, 301, torch.Generator("cuda").manual_seed(0))
        assert noise.device.type == "cuda"
        s = streaming.LresStreamer(G, noise, 301)
        out = torch.cat(list(s.iter_chunks(0, 301, 64)), dim=2)
        assert (out - ref).abs().max().item() <= 1e-5
        with pytest.raises(ValueError, match="generator must live on"):
            streaming.draw_lres_noise(G, 1, 301, torch.Generator().manual_seed(0))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
