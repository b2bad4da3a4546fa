"""The pipeline layer: source -> analyse -> save -> plot, one module per analysis.

``featuregeo.pipeline.<name>.run(...)`` is what the CLI, the demo and the ``analyses/`` scripts call.
It validates every argument before anything heavy is loaded, resolves source strings, opens the
output directory's :class:`~featuregeo.core.checkpoint.Checkpoint` (so an interrupted run resumes),
calls the analysis in :mod:`featuregeo.tl`, saves its :class:`~featuregeo.core.results.Result`, and
draws its figures with :mod:`featuregeo.pl`.
"""
