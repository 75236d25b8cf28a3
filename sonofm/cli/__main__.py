"""`python -m sonofm.cli ...` (and `torchrun -m sonofm.cli ...`) run the `sonofm` command."""

from sonofm.cli import main

main()
