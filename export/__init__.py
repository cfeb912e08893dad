"""metasr.export."""
