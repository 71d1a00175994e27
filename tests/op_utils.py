"""Helpers shared by the op tests: a direct loop evaluation of upfirdn2d (one output sample at a time).

Example (in a test module)::

    from tests.op_utils import slow_upfirdn2d
    expected = slow_upfirdn2d(x.numpy(), f.numpy(), up=2, padding=(2, 1, 2, 1))
"""

import numpy as np


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def slow_upfirdn2d(x, f, up=1, down=1, padding=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """Evaluate the upfirdn definition directly: one output pixel at a time, one tap at a time (float64 numpy).

    The up-sampled, padded signal is addressed by coordinates instead of being built: padded position (Y, X) holds
    x[(Y - y0) / upy, (X - x0) / upx] when both are whole numbers inside the image, zero otherwise.
    """
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    x0, x1, y0, y1 = padding
    if f is None:
        taps = np.ones((1, 1))
    else:
        f = np.asarray(f, dtype=np.float64)
        taps = np.outer(f, f) if f.ndim == 1 else f  # a 1-D filter runs along both axes
    taps = taps * gain
    fh, fw = taps.shape

    def padded(Y, X):
        Yu, Xu = Y - y0, X - x0
        if Yu < 0 or Xu < 0 or Yu >= H * upy or Xu >= W * upx or Yu % upy or Xu % upx:
            return np.zeros((N, C))
        return x[:, :, Yu // upy, Xu // upx]

    out_h = (H * upy + y0 + y1 - fh) // downy + 1
    out_w = (W * upx + x0 + x1 - fw) // downx + 1
    out = np.zeros((N, C, out_h, out_w))
    for oy in range(out_h):
        for ox in range(out_w):
            for ky in range(fh):
                for kx in range(fw):
                    # True convolution pairs window offset k with tap K-1-k; correlation with tap k.
                    tap = taps[ky, kx] if flip_filter else taps[fh - 1 - ky, fw - 1 - kx]
                    out[:, :, oy, ox] += tap * padded(oy * downy + ky, ox * downx + kx)
    return out
