"""`python -m saga_cli`: the `saga-orchestrator` command."""

from saga_cli import main

main()
