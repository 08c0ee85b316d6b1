"""Entry point for `python -m weightdoctor`."""

from weightdoctor.cli import main

if __name__ == "__main__":
    main()
