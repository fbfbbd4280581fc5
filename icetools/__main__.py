"""Allow ``python -m icetools``."""

from icetools.cli.app import main

if __name__ == "__main__":
    main()
