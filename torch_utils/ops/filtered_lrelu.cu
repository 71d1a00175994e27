// CUDA launch of the filtered_lrelu passes (the kernel itself is in upfirdn2d.h): plain, leaky ReLU with codes, and
// the stored derivative.

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#define LVG_PASS_NAMESPACE lvg_filtered_lrelu_plugin
#include "upfirdn2d.h"

namespace lvg_filtered_lrelu_plugin {

void pass_cuda(const PassArgs& a, c10::ScalarType dtype, int64_t numel) {
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(a.device));
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    switch (a.mode) {
    case kPlain:
        launch_pass<kPlain>(a, dtype, numel, stream);
        break;
    case kLrelu:
        launch_pass<kLrelu>(a, dtype, numel, stream);
        break;
    case kMask:
        launch_pass<kMask>(a, dtype, numel, stream);
        break;
    default:
        TORCH_CHECK(false, "filtered_lrelu_plugin: unknown pass mode ", a.mode);
    }
}

} // namespace lvg_filtered_lrelu_plugin
