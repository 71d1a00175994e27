"""LongVideoGAN dataset tools: build sharded ZIP video datasets (run as `python -m dataset_tools.<tool>`)."""
