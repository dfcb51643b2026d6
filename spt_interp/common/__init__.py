"""What every stage shares, one copy each: atomic writes, output folders, processes, the
architecture table (families: what each model family looks like to spt-interp), and the head
scores that locate writes and the later stages read (head_scores)."""
