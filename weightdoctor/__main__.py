"""Entry point for `python -m weightdoctor`."""

from weightdoctor.entry import main

if __name__ == "__main__":
    main()
