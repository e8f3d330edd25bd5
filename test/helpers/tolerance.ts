/**
 * Tolerances shared by the tests.
 *
 * "Lossless" means one thing everywhere: a setting that keeps every direction (full
 * ranks, RoPE kept on every frequency, lossless query rank) reproduces the original's
 * attention output, logits or perplexity within {@link LOSSLESS_REL_TOL} relative error.
 * That is float32 round-off through a few products and the exact latent norm's bound
 * (about 5e-7 on calibration data), with room for accumulation order; a real loss of one
 * direction out of dozens is orders of magnitude larger.
 */
export const LOSSLESS_REL_TOL = 1e-5;
