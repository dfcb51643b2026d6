"""`python -m spt_interp.cli ...` (as torchrun launches it) runs the command line."""

from spt_interp.cli import main

if __name__ == "__main__":
    main()
