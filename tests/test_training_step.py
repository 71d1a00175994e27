"""One training step of each phase with the tiny networks: G's running averages under gradient accumulation, the
order of random draws, and equality with stored numbers (issue 20)."""

import json
from pathlib import Path

import pytest
import torch

import dnnlib
from long_video_gan import augment, discriminator_lres, discriminator_sres, generator_lres, generator_sres
from long_video_gan import diff_augment as da
from long_video_gan.video_gan_lres import LowResVideoGAN
from long_video_gan.video_gan_sres import SuperResVideoGAN
from torch_utils import training_stats

pytestmark = pytest.mark.usefixtures("single_thread")

# ----------------------------------------------------------------------------


def sres_gan(grad_accum: int = 1, batch_gpu: int = 2, ada: bool = True, in_augment: bool = True) -> SuperResVideoGAN:
    torch.manual_seed(0)
    return SuperResVideoGAN(
        G_kwargs=dict(class_name="long_video_gan.generator_sres.VideoGenerator", **generator_sres.TINY_KWARGS),
        D_kwargs=dict(
            class_name="long_video_gan.discriminator_sres.VideoDiscriminator", **discriminator_sres.TINY_KWARGS
        ),
        device=torch.device("cpu"),
        batch_gpu=batch_gpu,
        grad_accum=grad_accum,
        D_lrate=0.003,
        augment_kwargs=dict(class_name="long_video_gan.augment.AugmentPipe", **augment.ADA_KWARGS) if ada else None,
        in_augment_kwargs=(
            dict(class_name="long_video_gan.augment.AugmentPipe", **augment.IN_AUGMENT_KWARGS) if in_augment else None
        ),
    )


def sres_batch(batch_size: int, seed: int, same_clips: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    k = generator_sres.TINY_KWARGS
    n = 1 if same_clips else batch_size
    lr = torch.rand([n, 3, 4 + 2 * k["temporal_context"], k["lr_height"], k["lr_width"]], generator=g) * 2 - 1
    hr = torch.rand([n, 3, 4, k["hr_height"], k["hr_width"]], generator=g) * 2 - 1
    return {"lr_video": lr.expand(batch_size, -1, -1, -1, -1), "hr_video": hr.expand(batch_size, -1, -1, -1, -1)}


def running_averages(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in G.named_buffers() if n.endswith(("magnitude_ema", "w_avg"))}


# ----------------------------------------------------------------------------


def test_sres_running_averages_advance_once_per_step_whatever_the_chunking(monkeypatch):
    # Two identical clips with one fixed z: the fakes of a 2-chunk step are those of a 1-chunk step, so G's magnitude
    # EMAs and w_avg must end the step equal (they moved twice as far with 2 chunks before issue 20).
    results = {}
    for accum in (1, 2):
        gan = sres_gan(grad_accum=accum, ada=False, in_augment=False)
        z = torch.randn([1, gan.G.latent_z_dim], generator=torch.Generator().manual_seed(5))
        monkeypatch.setattr(gan.G, "sample_latent_z", lambda batch_size, generator_z=None: z.expand(batch_size, -1))
        start = running_averages(gan.G)
        gan.train_step(1, lambda: sres_batch(2, seed=1, same_clips=True))
        results[accum] = running_averages(gan.G)
    assert len(results[1]) == 6  # One magnitude EMA per synthesis layer (4 and ToRGB) and the mapping's w_avg.
    for name, one_chunk in results[1].items():
        assert not torch.equal(one_chunk, start[name]), name
        torch.testing.assert_close(results[2][name], one_chunk, rtol=1e-5, atol=1e-7, msg=name)


def lres_gan(grad_accum: int = 1, batch_gpu: int = 2) -> LowResVideoGAN:
    torch.manual_seed(0)
    return LowResVideoGAN(
        G_kwargs=dict(
            class_name="long_video_gan.generator_lres.VideoGenerator",
            out_height=36,
            out_width=64,
            **generator_lres.TINY_KWARGS,
        ),
        D_kwargs=dict(
            class_name="long_video_gan.discriminator_lres.VideoDiscriminator",
            seq_length=16,
            max_edge=64,
            **discriminator_lres.TINY_KWARGS,
        ),
        device=torch.device("cpu"),
        batch_gpu=batch_gpu,
        grad_accum=grad_accum,
        seq_length=16,
    )


def lres_batch(batch_size: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.rand([batch_size, 3, 16, 36, 64], generator=g) * 2 - 1}


# ----------------------------------------------------------------------------


def record(monkeypatch, log: list, owner, name: str, label: str) -> None:
    """Logs `label` whenever `owner.name` is called."""
    function = getattr(owner, name)

    def wrapped(*args, **kwargs):
        log.append(label)
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


def test_sres_draw_order_is_the_originals(monkeypatch):
    # D step: both conditioning clips augmented and every z drawn for the whole batch before G runs, then per chunk D
    # on the fakes and on the reals (ADA each). The G step runs per chunk: conditioning, z, ADA.
    gan = sres_gan(grad_accum=2, batch_gpu=2)
    log = []
    record(monkeypatch, log, gan.in_augment, "forward", "in_augment")
    record(monkeypatch, log, gan.G, "sample_latent_z", "z")
    record(monkeypatch, log, gan.augment, "forward", "ada")
    gan.train_step(1, lambda: sres_batch(2, seed=1))
    g_step = ["in_augment", "z", "ada"] * 2
    d_step = ["in_augment", "in_augment", "z"] + ["ada", "ada"] * 2
    assert log == g_step + d_step


def test_lres_draw_order_is_the_originals(monkeypatch):
    # D step: every clip's embedding noise for the whole batch first (the original's one fake pass), then per chunk
    # DiffAugment and temporal scaling of the fakes and of the reals.
    gan = lres_gan(grad_accum=2, batch_gpu=2)
    log = []
    record(monkeypatch, log, gan.G, "sample_temporal_emb", "emb")
    record(monkeypatch, log, da, "diff_augment", "diffaug")
    gan.train_step(1, lambda: lres_batch(2, seed=1))
    g_step = ["emb", "diffaug"] * 2
    d_step = ["emb"] + ["diffaug", "diffaug"] * 2
    assert log == g_step + d_step


# ----------------------------------------------------------------------------
# One step of each phase against stored numbers.
#
# The numbers in tests/data/training_step_reference.json were computed by THIS code (after the issue-20 fixes: ADA at
# the original's sample positions, running averages advancing once per step, the original's order of draws); no
# original code was run to make them. They do not prove equality with the original; they pin today's behaviour so
# that any later change to a training step (losses, gradients, optimiser, buffers, the random stream) is noticed.
# Regenerate deliberately with `python -m tests.test_training_step` and say why in the commit.

REFERENCE_PATH = Path(__file__).parent / "data" / "training_step_reference.json"


def _slices(module: torch.nn.Module, grads: bool, count: int = 4, width: int = 3) -> dict[str, list[float]]:
    """The first `width` values of `count` evenly spaced parameters (or of their gradients)."""
    named = list(module.named_parameters())
    picked = [named[round(i * (len(named) - 1) / (count - 1))] for i in range(count)]
    out = {}
    for name, param in picked:
        value = param.grad if grads else param
        out[name] = [] if value is None else value.detach().flatten()[:width].tolist()
    return out


def one_step_numbers(phase: str) -> dict:
    """Runs step 0 (G step, D step, R1, sres: ADA update; G EMA) of a tiny run with 2 accumulation chunks."""
    if phase == "sres":
        gan = sres_gan(grad_accum=2, batch_gpu=2)
        gan.augment.p.fill_(0.3)  # So that every ADA op can run.
        batches = iter([sres_batch(2, seed=s) for s in (11, 12, 13)])
    else:
        gan = lres_gan(grad_accum=2, batch_gpu=2)
        batches = iter([lres_batch(2, seed=s) for s in (11, 12)])
    numbers = {"stats": {}, "grads": []}

    def report(name, value):
        values = torch.as_tensor(value).detach().flatten().double().tolist()
        numbers["stats"].setdefault(name, []).extend(values)
        return value

    optimizer_step = gan._optimizer_step

    def recording_optimizer_step(module, opt, gain):
        numbers["grads"].append(_slices(module, grads=True))
        optimizer_step(module, opt, gain)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training_stats, "report", report)
        mp.setattr(gan, "_optimizer_step", recording_optimizer_step)
        torch.manual_seed(1)
        gan.train_step(0, lambda: next(batches))
        numbers["next_draw"] = torch.rand([2]).tolist()  # Pins how many numbers the step drew from the global RNG.
    numbers["buffers"] = {name: value.flatten()[:4].tolist() for name, value in running_averages(gan.G).items()}
    numbers["G_params"] = _slices(gan.G, grads=False)
    numbers["D_params"] = _slices(gan.D, grads=False)
    numbers["G_ema_params"] = _slices(gan.G_ema, grads=False)
    if phase == "sres":
        numbers["augment_p"] = float(gan.augment.p)
    return numbers


def _assert_numbers_close(got, expected, path: str = "") -> None:
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), path
        for key in expected:
            _assert_numbers_close(got[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list) and expected and isinstance(expected[0], (dict, list)):
        assert len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_numbers_close(g, e, f"{path}[{i}]")
    else:
        g = torch.tensor(got, dtype=torch.float64)
        e = torch.tensor(expected, dtype=torch.float64)
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6, msg=lambda m: f"{path}: {m}")


@pytest.mark.parametrize("phase", ["lres", "sres"])
def test_one_step_equals_stored_numbers(phase):
    """Step 0 of a tiny run (2 chunks, R1, sres: ADA at p = 0.3) against numbers computed by this code after the
    issue-20 fixes (not by the original: we have no original code here). Their value is to catch future drift."""
    expected = json.loads(REFERENCE_PATH.read_text())[phase]
    _assert_numbers_close(one_step_numbers(phase), expected, phase)


if __name__ == "__main__":
    # Rewrites the stored numbers (deliberately, after a change that is meant to alter a training step).
    torch.set_num_threads(1)
    data = {phase: one_step_numbers(phase) for phase in ("lres", "sres")}
    with dnnlib.util.atomic_write(REFERENCE_PATH, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    print(f"wrote {REFERENCE_PATH}")
