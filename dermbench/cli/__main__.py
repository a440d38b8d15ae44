"""`python -m dermbench.cli`: the same as the `dermbench` command."""
from dermbench.cli import main

main()
