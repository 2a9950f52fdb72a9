"""``python -m cluster.populate``: the ``nasdb populate`` command as a script (``ray job submit`` entry point)."""

import sys

from cluster.populate.cli import populate_command

if __name__ == "__main__":
    populate_command.main(args=sys.argv[1:], prog_name="python -m cluster.populate")
