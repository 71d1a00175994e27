// CUDA launch of the fused bias/activation element (bias_act.h): a grid-stride loop, one element per thread step,
// 32-bit indexing when the tensor is small enough (integer division is much cheaper than in 64 bits).

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "bias_act.h"

namespace lvg_bias_act {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads) bias_act_kernel(Args args) {
    const index_t numel = static_cast<index_t>(args.numel);
    const index_t stride = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
    for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
        bias_act_element<scalar_t, index_t>(args, i);
    }
}

} // namespace

void bias_act_cuda(const Args& args, c10::ScalarType dtype) {
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(args.device));
    const int64_t blocks = std::min<int64_t>((args.numel + kThreads - 1) / kThreads, kMaxBlocks);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    // 32-bit indices leave room for the last grid stride without overflow.
    const bool small = args.numel + blocks * kThreads < (int64_t(1) << 31);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "bias_act_cuda", [&] {
        if (small) {
            bias_act_kernel<scalar_t, int32_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
        } else {
            bias_act_kernel<scalar_t, int64_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
}

} // namespace lvg_bias_act
