"""metasr.training."""
