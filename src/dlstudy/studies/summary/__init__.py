"""Study summaries read from disk: run records, statistics, the study and reproduce reports, the results page.

Nothing here imports studies.running; per-kind blocks come through the KINDS registry (studies.get_summarizer).
"""
