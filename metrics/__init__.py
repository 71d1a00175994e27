"""Video GAN metrics (FVD, FID, KID, IS) for LongVideoGAN."""
