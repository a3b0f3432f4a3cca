"""`python -m worker`: the command line."""

from worker.cli import main

main(prog_name="python -m worker")
