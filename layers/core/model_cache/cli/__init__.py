"""`model-cache`, the command line: the top floor; nothing imports it."""
