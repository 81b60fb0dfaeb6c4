"""Running studies: plan the arms x seeds, search lrs, hand runs to an executor, then write the report.

Data flows one way: running -> kinds (per-kind summaries) and summary (records, statistics, reports);
neither of those imports running.
"""
