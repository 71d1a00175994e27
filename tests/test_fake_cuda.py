"""Device placement of the CUDA path, checked without a GPU (issue 16): torch_utils/fake_cuda.py and
benchmarks/gpu_check.py --fake.

Under `fake_cuda()` every tensor on "cuda" is a data-less meta tensor that reports `cuda:0`, so the code takes its
CUDA branches (fp16 layers, the compiled ops' kernel paths with shape-only plugins) while a CPU tensor mixed in, a
host read of a device value or an fp16/fp32 operand mismatch raises. `gpu_check.py --fake` runs one training step of
each phase with the paper-size networks (batch 1), a 301-frame streamed generation of both phases and a feature pass
of both detectors that way (about a minute on a busy 2-core machine, most of it building the networks' shapes).
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from torch_utils import fake_cuda as fc
from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fake_cuda_tensors_report_cuda_and_refuse_what_a_gpu_refuses():
    with fc.fake_cuda():
        x = torch.zeros([2, 3], device="cuda")
        assert x.device == torch.device("cuda", 0) and x.is_cuda and x.is_meta
        assert torch.ones(3).to(x.device).is_meta and torch.ones(3).cuda().is_meta
        assert torch.cuda.is_available()
        with pytest.raises(RuntimeError, match="device"):
            x + torch.ones([2, 3])  # A CPU tensor in a CUDA op.
        with pytest.raises(RuntimeError, match="device"):
            torch.stack([x.sum(), torch.tensor(2.0)])  # The 0-dim CPU tensor that FakeTensorMode lets through.
        with pytest.raises(fc.HostReadError, match="test_fake_cuda.py"):
            x.sum().item()
        with pytest.raises(fc.HostReadError):
            bool(x.sum() > 0)
        with pytest.raises(RuntimeError, match="one dtype"):
            F.conv2d(
                torch.zeros([1, 3, 8, 8], device="cuda", dtype=torch.float16), torch.zeros([4, 3, 3, 3], device="cuda")
            )
        g = torch.Generator(device="cuda").manual_seed(1)
        assert g.device.type == "cuda" and torch.randn([2], generator=g, device="cuda").is_meta
    assert not torch.zeros(1).is_meta and torch.Generator().device.type == "cpu"  # Everything restored.


def test_compiled_ops_take_their_cuda_path_first_under_no_grad():
    fu = upfirdn2d.setup_filter([1, 3, 3, 1])
    with fc.fake_cuda():
        x = torch.zeros([2, 4, 8, 8], device="cuda", dtype=torch.float16)
        b = torch.zeros([4], device="cuda", dtype=torch.float16)
        fu_cuda = fu.to("cuda")
        with torch.no_grad():
            y = filtered_lrelu.filtered_lrelu(x, fu_cuda, fu_cuda, b, up=2, down=2, padding=3, clamp=256)
        assert y.shape == (2, 4, 8, 8) and y.dtype == torch.float16 and y.is_cuda
        assert filtered_lrelu._plugin.calls > 0  # The shape-only stand-in ran: the kernel path was taken.
        x.requires_grad_(True)
        y = bias_act.bias_act(x, b, act="lrelu", clamp=256)
        assert "BiasActCuda" in type(y.grad_fn).__name__
        (g,) = torch.autograd.grad(y.float().sum(), x)
        assert g.dtype == torch.float16 and g.is_cuda
        with pytest.raises(RuntimeError, match="b must be on"):  # A CPU bias reaching the kernel.
            bias_act._bias_act_cuda(act="lrelu").apply(x, torch.zeros([4], dtype=torch.float16))


def test_ada_statistics_device_bug_fails_the_fake_training_step(monkeypatch):
    # The super-res step of gpu_check --fake with the ADA accumulation of before the fix (a CPU count stacked with
    # the device sum) must fail: the fake step catches such a crash.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_check

    from long_video_gan import augment

    def old_accumulate(self, sign_real_values):
        values = torch.as_tensor(sign_real_values).detach().flatten().to(torch.float64)
        stats = torch.stack([values.sum(), torch.tensor(float(values.numel()), dtype=torch.float64)])
        self._stats = stats if self._stats is None else self._stats + stats

    with fc.fake_cuda():
        assert gpu_check.stage_training(fake=True, steps=1, phases=("sres",)).startswith("sres: 1 step")
        monkeypatch.setattr(augment.AdaController, "accumulate", old_accumulate)
        with pytest.raises(RuntimeError, match="device"):
            gpu_check.stage_training(fake=True, steps=1, phases=("sres",))


@pytest.mark.slow
def test_gpu_check_fake_passes_every_stage():
    # About 50 s: paper-size networks of both phases as shapes, the host-loop kernels, a 301-frame stream.
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--fake"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    lines = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == 6 and all(line.startswith("PASS") for line in lines), out
    assert "6 of 6 stages passed" in out


def test_gpu_check_without_gpu_says_so_and_fails():
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py")], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no CUDA device" in result.stdout and "--fake" in result.stdout


def _old_generate(self, G, batch_size, magnitude_ema_beta=1.0, emb=None, offsets=None):
    """LowResVideoGAN.generate before the fix: the crop offsets read on the host (a GPU sync every step)."""
    extra = self._extra_frames(G)
    video = G(batch_size, self.seq_length + extra, magnitude_ema_beta=magnitude_ema_beta, emb=emb)
    if offsets is None:
        offsets = torch.randint(0, extra, [batch_size], device=video.device)
    return torch.stack([clip[:, o : o + self.seq_length] for clip, o in zip(video, offsets.tolist())])


def test_host_sync_in_the_lres_step_fails_the_fake_training_step(monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import gpu_check

    from long_video_gan import video_gan_lres

    with fc.fake_cuda():
        assert gpu_check.stage_training(fake=True, steps=1, phases=("lres",)).startswith("lres: 1 step")
        monkeypatch.setattr(video_gan_lres.LowResVideoGAN, "generate", _old_generate)
        with pytest.raises(fc.HostReadError, match="tolist of a CUDA tensor .*_old_generate"):
            gpu_check.stage_training(fake=True, steps=1, phases=("lres",))


def test_lres_crop_on_the_device_equals_the_per_clip_slices():
    import dnnlib
    import train_lres

    opts = dnnlib.EasyDict(train_lres.PRESETS["tiny"], dataset="-", seed=0, preset="tiny")
    c = train_lres.build_config(opts, torch.device("cpu"), 1)
    torch.manual_seed(0)
    gan = dnnlib.util.construct_class_by_name(**c.gan_kwargs, device=torch.device("cpu"), batch_gpu=2, grad_accum=1)
    extra = gan._extra_frames(gan.G)
    assert extra > 3
    emb = gan.G.sample_temporal_emb(2, gan.seq_length + extra)
    offsets = torch.tensor([1, extra - 1])
    gan.G.requires_grad_(True)
    got = gan.generate(gan.G, 2, emb=emb, offsets=offsets)
    expected = _old_generate(gan, gan.G, 2, emb=emb, offsets=offsets)
    assert torch.equal(got, expected)
    params = [p for p in gan.G.parameters() if p.requires_grad][:3]
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(got.square().sum(), params),
                                                 torch.autograd.grad(expected.square().sum(), params)))  # fmt: skip
