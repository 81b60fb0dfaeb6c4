"""Per-kind study summaries: `summarize(study_dir, study, runs) -> (blocks, summary_rows)` (see studies.KINDS).

They read finished runs through summary.records and draw figures through dlstudy.figures.study.
"""
