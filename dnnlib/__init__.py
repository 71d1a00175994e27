"""dnnlib: small, stable helpers (EasyDict, build-by-name, URL open/cache, log tee) referenced by name in pickles."""

from .util import EasyDict, make_cache_dir_path

__all__ = ["EasyDict", "make_cache_dir_path"]
