"""What a run store becomes for a reader: the schema of method and variant names and column
order, the tables, the figures and provenance, all rebuilt from `runs.csv` without the harness."""
