"""GreenStream's rule book: pure polars, no Dagster. Read top to bottom:

files (rule 6) -> validation (rules 1-4: units, missing, timestamps, duplicates, negatives)
-> flagging (rule 4 anomalies, rule 5 faulty meters, enrichment) -> reports (system peak).
Then the outputs people act on: vee (estimation and quality codes, completeness), meter_reports
(per-meter peaks and energy), incidents (faulty meters across days), features (hourly, for
forecasting) and drift (data quality over time). config.py holds every threshold.
"""
