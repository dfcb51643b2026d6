"""What every stage shares, one copy each: atomic writes, output folders, processes, and the
architecture table (families: what each model family looks like to spt-interp)."""
