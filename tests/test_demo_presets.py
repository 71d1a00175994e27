"""The `--preset demo` of train_lres.py / train_sres.py (the bundled demo models): networks between tiny and paper that
chain (low-res output = super-res input), and options that resume across sessions with little lost work."""

import pytest
import torch

import dnnlib
import train_lres
import train_sres
from long_video_gan import training_setup

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(script, preset: str) -> dnnlib.EasyDict:
    unset = {k: None for k in script.PRESETS["paper"] if k != "metric"}
    opts = dnnlib.EasyDict(preset=preset, dataset="unused", seed=0, metric=(), **unset)
    opts = training_setup.apply_preset(opts, script.PRESETS)
    return script.build_config(opts, torch.device("cpu"), world_size=1)


def _num_params(kwargs: dict) -> int:
    net = dnnlib.util.construct_class_by_name(**kwargs)
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("script", [train_lres, train_sres], ids=["lres", "sres"])
def test_demo_networks_are_between_tiny_and_paper_sized(script):
    demo, tiny = _config(script, "demo"), _config(script, "tiny")
    for key in ("G_kwargs", "D_kwargs"):
        n_demo, n_tiny = _num_params(demo.gan_kwargs[key]), _num_params(tiny.gan_kwargs[key])
        assert 3 * n_tiny < n_demo < 1_000_000, (key, n_tiny, n_demo)  # Paper networks: tens of millions.
    # Snapshots often enough that a killed run loses little: a train pickle at every G_ema snapshot.
    assert demo.ticks_per_train_ckpt == demo.ticks_per_G_ema_ckpt
    assert demo.steps_per_tick * demo.ticks_per_train_ckpt <= 100


def test_demo_models_chain_at_the_paper_resolutions():
    G_lres = dnnlib.util.construct_class_by_name(**_config(train_lres, "demo").gan_kwargs["G_kwargs"])
    sres = _config(train_sres, "demo")
    G_sres = dnnlib.util.construct_class_by_name(**sres.gan_kwargs["G_kwargs"])
    assert (G_lres.out_height, G_lres.out_width) == (G_sres.lr_height, G_sres.lr_width) == (36, 64)
    assert (G_sres.hr_height, G_sres.hr_width) == (144, 256)
    assert sres.dataset_kwargs["lr_height"] == 36 and sres.dataset_kwargs["hr_height"] == 144
