"""The `acsearch` command line: one module per verb, registered in app.py."""
