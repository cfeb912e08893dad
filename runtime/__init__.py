"""metasr.runtime: the torch-free runtime (scale arithmetic, Upscaler, metasr-run)."""
