"""``python -m nasdb.cli``: the ``nasdb`` command."""

from nasdb.cli import main

if __name__ == "__main__":
    main()
