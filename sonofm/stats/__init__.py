"""The statistics kit below the jobs: metrics with bootstrap CIs (`metrics`, `bootstrap`, `ranks`,
`exact_ranks`, `metric_warning`), per-patient pooled statistics and multiple-testing corrections
(`patients`), chance-level health checks (`health`) and the plain-language reading of results
(`reading`). Eval, fine-tuning, the VLM comparison and the demo report use it; it imports no job
(only `exact_ranks` imports torch). `sonofm.eval.<module>` re-exports each module (and
`sonofm.eval.stats` re-exports `patients`).
"""
