"""``python -m kdcli`` works like the ``kdcli`` command."""

from kdcli.cli import main

main()
