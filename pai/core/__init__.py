"""Vocabulary every layer uses, importing nothing else of pai: errors, step strings, devices,
atomic writes, the run store and the table of derived random streams (`seeds`)."""
