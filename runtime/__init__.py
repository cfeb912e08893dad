"""metasr.runtime."""
