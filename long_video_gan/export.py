"""Safe weights for LongVideoGAN (Brooks et al., NeurIPS 2022) generators: convert pickles to `.safetensors`.

A network pickle is a program: loading it executes the network source embedded in it (torch_utils.persistence)
and any other code its author put there, so a pickle from an untrusted source can run anything on your machine.
A `.safetensors` file holds only raw tensor bytes and a JSON header; loading it parses the header, builds one of
an allow-listed set of our generator classes from the constructor kwargs in the header, and copies the tensors in.
Nothing in the file is executed and nothing is unpickled.

Convert once, in a place where you trust the pickle (ours or the original release's):

    python -m long_video_gan.export horseback_lres.pkl horseback_lres.safetensors
    python -m long_video_gan.export horseback_sres.pkl horseback_sres.safetensors

then use the `.safetensors` files wherever a pickle was accepted (`api.load_generator`, `generate.py`,
`calc_metrics.py`, `plot_color_similarity.py`); the suffix `.safetensors` selects this loader.

File layout: the standard safetensors format (8-byte little-endian header length, JSON header, tensor bytes), one
tensor per entry of the generator's `state_dict()`, and these header metadata strings:

* `format`: "long_video_gan.generator"
* `format_version`: "1"
* `class_name`: "long_video_gan.generator_lres.VideoGenerator" or "long_video_gan.generator_sres.VideoGenerator"
* `init_kwargs`: JSON object of the constructor keyword arguments
* `source`: base name of the pickle it was converted from (informational)
"""

import contextlib
import inspect
import json
import os
import struct
import urllib.parse

import click
import numpy as np
import torch

import dnnlib

FORMAT = "long_video_gan.generator"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"

# The only classes a `.safetensors` file may ask for, by the name written in its header. Their modules are
# imported by us, not named by the file.
_PHASE_CLASS_NAMES = dict(
    lres="long_video_gan.generator_lres.VideoGenerator",
    sres="long_video_gan.generator_sres.VideoGenerator",
)
ALLOWED_CLASS_NAMES = tuple(_PHASE_CLASS_NAMES.values())

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # The safetensors library's own limit.

# ----------------------------------------------------------------------------


def _allowed_class(class_name: str) -> type:
    """The generator class for an allow-listed name (KeyError otherwise)."""
    from long_video_gan import generator_lres, generator_sres

    classes = {
        _PHASE_CLASS_NAMES["lres"]: generator_lres.VideoGenerator,
        _PHASE_CLASS_NAMES["sres"]: generator_sres.VideoGenerator,
    }
    return classes[class_name]


def is_safetensors(path_or_url: str | os.PathLike) -> bool:
    """True if a path or URL names a `.safetensors` file (by its suffix; a URL's query string is ignored)."""
    source = os.fspath(path_or_url)
    if dnnlib.util.is_url(source, allow_file_urls=True):
        source = urllib.parse.urlparse(source).path
    return source.lower().endswith(SUFFIX)


# ----------------------------------------------------------------------------
# Constructor kwargs <-> JSON.


def _to_json_value(value: object, where: str) -> object:
    """A constructor argument as plain JSON data (tuples become lists, numpy scalars Python numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):  # The original's super-res kwargs may hold numpy scalars.
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"constructor argument {where} has non-string keys, which JSON cannot store")
        return {k: _to_json_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ValueError(f"constructor argument {where} is a {type(value).__name__}, which JSON cannot store")


def _constructor_signature(cls: type) -> inspect.Signature:
    """Signature of the constructor of `cls`, looking through the persistence decorator's `(*args, **kwargs)`."""
    from torch_utils import persistence

    for klass in cls.__mro__:
        if "__init__" in vars(klass) and not persistence.is_persistent(klass):
            return inspect.signature(klass.__init__)
    raise TypeError(f"{cls.__name__} has no constructor")  # Unreachable for nn.Module subclasses.


def generator_config(G: torch.nn.Module) -> tuple[str, dict]:
    """(allow-listed class name, JSON-ready constructor kwargs) that rebuild generator `G` as one of our classes.

    Works for our networks and for the original release's (loaded from its pickles, they are instances of classes
    defined by the source embedded in the pickle): the kwargs come from the arguments recorded by the persistence
    decorator, positional ones bound to our constructor's parameter names; parameters not recorded (the original's
    dataclass defaults, which can differ from ours) are read from the attribute of the same name when `G` has one.
    """
    from long_video_gan import api

    phase = api.detect_phase(G)
    if phase is None:
        raise ValueError(f"{type(G).__name__} is not a LongVideoGAN generator")
    class_name = _PHASE_CLASS_NAMES[phase]
    signature = _constructor_signature(_allowed_class(class_name))
    init_args = getattr(G, "init_args", None) or ()
    init_kwargs = dict(getattr(G, "init_kwargs", None) or {})
    try:
        kwargs = dict(signature.bind_partial(None, *init_args, **init_kwargs).arguments)
    except TypeError as err:
        raise ValueError(f"the recorded constructor arguments of {type(G).__name__} do not fit {class_name}: {err}")
    kwargs.pop("self")
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(kwargs.pop(name, {}))
        elif name != "self" and name not in kwargs and hasattr(G, name):
            kwargs[name] = getattr(G, name)
    return class_name, {name: _to_json_value(value, name) for name, value in kwargs.items()}


# ----------------------------------------------------------------------------
# Writing.


def _state_tensors(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as independent contiguous CPU tensors (safetensors refuses shared storage)."""
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in G.state_dict().items()}


def save_generator(G: torch.nn.Module, path: str | os.PathLike, source: str | None = None) -> None:
    """Write generator `G` (ours or the original's) to a `.safetensors` file, atomically (temp file + rename)."""
    import safetensors.torch

    path = os.fspath(path)
    if not path.lower().endswith(SUFFIX):
        raise ValueError(f"output file must end in {SUFFIX} (the loaders choose the format by it), got {path!r}")
    class_name, kwargs = generator_config(G)
    metadata = dict(
        format=FORMAT,
        format_version=str(FORMAT_VERSION),
        class_name=class_name,
        init_kwargs=json.dumps(kwargs, sort_keys=True),
    )
    if source is not None:
        metadata["source"] = os.path.basename(source)
    data = safetensors.torch.save(_state_tensors(G), metadata=metadata)
    with dnnlib.util.atomic_write(path, "wb") as f:
        f.write(data)


# ----------------------------------------------------------------------------
# Reading: header checks, then an allow-listed constructor, then a shape-checked state dict.


def read_header(data: bytes, source: str) -> dict:
    """The safetensors JSON header of `data` (bytes of a whole file), checked; ValueError naming `source` if bad."""
    if len(data) < 8:
        raise ValueError(f"{source}: not a safetensors file: {len(data)} bytes, shorter than the 8-byte header size")
    (size,) = struct.unpack("<Q", data[:8])
    if size > _MAX_HEADER_BYTES or 8 + size > len(data):
        raise ValueError(
            f"{source}: not a safetensors file: the header size field says {size} bytes, but the file has "
            f"{len(data)} bytes"
        )
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{source}: not a safetensors file: its header is not JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{source}: bad safetensors header: a JSON {type(header).__name__}, expected an object")
    return header


def read_config(header: dict, source: str) -> tuple[str, dict]:
    """(class name, constructor kwargs) from a checked header; ValueError naming `source` and the problem."""
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        raise ValueError(
            f"{source}: no LongVideoGAN metadata in the safetensors header (expected a file written by "
            f"`python -m long_video_gan.export`)"
        )
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{source}: header metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r}")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(
            f"{source}: header metadata 'format_version' is {version!r}; this code reads version {FORMAT_VERSION}"
        )
    class_name = metadata.get("class_name")
    if class_name not in ALLOWED_CLASS_NAMES:
        raise ValueError(
            f"{source}: header names class {class_name!r}, which is not allowed; allowed: "
            f"{', '.join(ALLOWED_CLASS_NAMES)}"
        )
    try:
        kwargs = json.loads(metadata.get("init_kwargs", ""))
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{source}: header metadata 'init_kwargs' is not JSON ({err})") from err
    if not isinstance(kwargs, dict):
        raise ValueError(f"{source}: header metadata 'init_kwargs' is a JSON {type(kwargs).__name__}, not an object")
    return class_name, kwargs


# Tensor dtypes of the safetensors header, by their names there.
_DTYPES = dict(
    F64=torch.float64,
    F32=torch.float32,
    F16=torch.float16,
    BF16=torch.bfloat16,
    I64=torch.int64,
    I32=torch.int32,
    I16=torch.int16,
    I8=torch.int8,
    U8=torch.uint8,
    BOOL=torch.bool,
)


def read_tensor_specs(header: dict, source: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor listed in a checked header; ValueError naming `source` if malformed."""
    specs = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        dtype = _DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape) or dtype is None:
            raise ValueError(f"{source}: bad safetensors header entry for tensor {name!r}: {entry!r}")
        specs[name] = (tuple(shape), dtype)
    return specs


def _check_tensors(G: torch.nn.Module, specs: dict, what: str, source: str) -> None:
    """Raise ValueError naming `source` unless `specs` (name -> (shape, dtype)) fit G's state dict exactly."""
    expected = {name: (tuple(t.shape), t.dtype) for name, t in G.state_dict().items()}
    missing = [name for name in expected if name not in specs]
    unexpected = [name for name in specs if name not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        if unexpected:
            extra = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
            parts.append(f"{len(unexpected)} unexpected ({extra})")
        raise ValueError(f"{source}: tensors do not match {what}: {'; '.join(parts)}")
    for name, (want_shape, want_dtype) in expected.items():
        got_shape, got_dtype = specs[name]
        if got_shape != want_shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {list(got_shape)}, but {what} expects {list(want_shape)}"
            )
        if got_dtype != want_dtype:
            raise ValueError(f"{source}: tensor {name!r} has dtype {got_dtype}, but {what} expects {want_dtype}")


def _construct(class_name: str, kwargs: dict, source: str, device: str | None = None) -> torch.nn.Module:
    """Build an allow-listed class; ValueError naming `source` if the constructor rejects the kwargs."""
    try:
        with torch.device(device) if device else contextlib.nullcontext(), torch.random.fork_rng(devices=[]):
            return _allowed_class(class_name)(**kwargs)  # fork_rng: initialisation leaves the caller's RNG alone.
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {class_name} rejects the header's init_kwargs ({err})") from err


def load_generator(path_or_url: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build a generator from a `.safetensors` file (path, file:// or http(s) URL) without unpickling anything.

    Raises ValueError naming the file and the problem for a bad header, a class outside the allow-list, kwargs the
    constructor rejects, or tensors whose names, shapes or dtypes do not fit. The tensor list of the header is
    checked against a parameter-free ("meta" device) instance first, so a file cannot make us allocate a network
    larger than its own tensors. Returns the network in eval mode with gradients off, on `device`. Use
    `long_video_gan.api.load_generator` to also check the phase.
    """
    import safetensors
    import safetensors.torch

    source = os.fspath(path_or_url)
    with dnnlib.util.open_url(source, verbose=False) as f:
        data = f.read()
    header = read_header(data, source)
    class_name, kwargs = read_config(header, source)
    specs = read_tensor_specs(header, source)
    what = f"{class_name.rsplit('.', 2)[-2]}.VideoGenerator(**init_kwargs)"
    _check_tensors(_construct(class_name, kwargs, source, device="meta"), specs, what, source)
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(f"{source}: bad safetensors data ({err})") from err
    G = _construct(class_name, kwargs, source)
    G.load_state_dict(tensors, strict=True)
    return G.eval().requires_grad_(False).to(torch.device(device))


# ----------------------------------------------------------------------------
# Conversion.


@torch.no_grad()
def max_output_difference(G_a: torch.nn.Module, G_b: torch.nn.Module, seed: int = 0) -> float:
    """Largest absolute difference between the outputs of two generators of one phase for the same noise.

    Low-res: 8 streamed frames; super-res: one frame from a random low-res input and z (the SG3 network).
    """
    from long_video_gan import api

    gen = torch.Generator().manual_seed(seed)
    if api.detect_phase(G_a) == "lres":
        video_a = torch.cat([c.video for c in api.iter_video_chunks(G_a, seed=seed, num_frames=8)], dim=2)
        video_b = torch.cat([c.video for c in api.iter_video_chunks(G_b, seed=seed, num_frames=8)], dim=2)
    else:
        ctx = int(G_a.temporal_context)
        device = next(G_a.parameters()).device  # Drawn on the CPU (same numbers on any device), used on G's device.
        cond = torch.rand([1, 3, 2 * ctx + 1, int(G_a.lr_height), int(G_a.lr_width)], generator=gen) * 2 - 1
        cond = cond.to(device)
        z = torch.randn([1, int(G_a.latent_z_dim)], generator=gen).to(device)
        video_a, video_b = G_a.SG3(z, cond), G_b.SG3(z, cond)
    return float((video_a - video_b).abs().max())


def export(in_path: str, out_path: str, check: bool = True, tolerance: float = 1e-4) -> torch.nn.Module:
    """Convert a generator pickle (ours or the original release's, path or URL) to `out_path` (.safetensors).

    With `check`, reloads the written file and compares its output with the pickle's for one noise draw; raises
    ValueError if they differ by more than `tolerance`. Returns the generator loaded from the pickle.
    """
    from long_video_gan import api

    if is_safetensors(in_path):
        raise ValueError(f"{in_path} is already a {SUFFIX} file; the input must be a network pickle")
    G = api.load_generator(in_path, device="cpu")  # Unpickles (runs the pickle's code): trust the input.
    save_generator(G, out_path, source=os.fspath(in_path))
    if check:
        loaded = api.load_generator(out_path, device="cpu", phase=api.detect_phase(G))
        diff = max_output_difference(G, loaded)
        if not diff <= tolerance:
            os.remove(out_path)
            raise ValueError(
                f"{out_path}: the converted generator's output differs from {in_path}'s by {diff:.3g} (tolerance "
                f"{tolerance:g}); file removed"
            )
    return G


# ----------------------------------------------------------------------------


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.argument("in_path", metavar="IN.pkl")
@click.argument("out_path", metavar="OUT.safetensors")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Reload the written file and compare its output with the pickle's (10-20 s on a CPU at release size).",
)
def main(in_path, out_path, check):
    """Convert a LongVideoGAN generator pickle (ours or the original release's) to a .safetensors file.

    Loading a pickle runs the code inside it; loading the .safetensors file runs none (only allow-listed
    generator classes of this package are built from its header). Accepts G_ema pickles, released
    *_lres.pkl/*_sres.pkl and checkpoint dicts (G_ema, else G).

    \b
    Examples:
      python -m long_video_gan.export horseback_lres.pkl horseback_lres.safetensors
      python -m long_video_gan.export runs/00003/checkpoints/ckpt-00005000-G-ema.pkl lres.safetensors
    """
    if not out_path.lower().endswith(SUFFIX):
        raise click.ClickException(f"OUT.safetensors: the output file must end in {SUFFIX}, got {out_path!r}")
    try:
        G = export(in_path, out_path, check=check)
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err))
    from long_video_gan import api

    num_params = sum(p.numel() for p in G.parameters())
    phase = api.PHASE_NAMES[api.detect_phase(G)]
    checked = " (output checked against the pickle)" if check else ""
    print(f"Wrote {out_path}: {phase} generator, {num_params:,} parameters{checked}")


# ----------------------------------------------------------------------------

if __name__ == "__main__":
    main()
