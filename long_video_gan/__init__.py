"""LongVideoGAN ("Generating Long Videos of Dynamic Scenes", Brooks et al., NeurIPS 2022), rebuilt for CPU and GPU.

Tensor letters used in shape comments throughout the package: N batch, C channels, T frames, H height, W width,
K filter taps, S styles/latent width. Videos are `[N, C, T, H, W]` float32 in `[-1, 1]`.
"""
