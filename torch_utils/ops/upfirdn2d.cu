// CUDA launch of the plain upfirdn2d pass (the kernel itself is in upfirdn2d.h, shared with filtered_lrelu).

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#define LVG_PASS_NAMESPACE lvg_upfirdn2d_plugin
#include "upfirdn2d.h"

namespace lvg_upfirdn2d_plugin {

void pass_cuda(const PassArgs& a, c10::ScalarType dtype, int64_t numel) {
    TORCH_CHECK(a.mode == kPlain, "upfirdn2d_plugin: only the plain pass is compiled, got mode ", a.mode);
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(a.device));
    launch_pass<kPlain>(a, dtype, numel, c10::cuda::getCurrentCUDAStream());
}

} // namespace lvg_upfirdn2d_plugin
