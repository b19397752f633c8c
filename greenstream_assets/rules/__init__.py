"""GreenStream's rule book: pure polars, no Dagster. Read top to bottom:

files (rule 6) -> validation (rules 1-4: units, missing, timestamps, duplicates, negatives)
-> flagging (rule 4 anomalies, rule 5 faulty meters, enrichment) -> reports (peaks).
"""
