"""One module per command: parse options, call one analysis, hand the result to a renderer."""
