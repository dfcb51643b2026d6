"""Experiments on top of tuning and evaluation: the fair comparison of tuning methods, the
learning-rate frontier (its grid rule, runs, read-outs at matched confidence) and the run store
that keeps each finished run, so a stopped frontier resumes where it was."""
