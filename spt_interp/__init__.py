"""spt-interp."""
