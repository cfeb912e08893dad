"""metasr.scanners."""
