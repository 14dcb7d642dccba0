"""What a user waits for: recon's default presets against the PyTorch3D tutorial recipes, end to end.

``python -m recon.bench`` (or ``make bench``) measures, for each method on the cow and side by side
in one run (see :mod:`recon.bench.main`):

(a) :mod:`recon.bench.fit`: the wall clock of a complete ``python -m recon fit``, from process start
    to its exit, with every file written and the final full score;
(b) :mod:`recon.bench.streamed`: a run driven through the page's controller (streaming, live
    evaluation, timelapse), timed to the tutorial's quality as the full evaluation scores it, with
    the benchmark's own extra evaluations taken out of the clock;
(c) :mod:`recon.bench.browser`: the real page in headless Chromium: Run to the first chart update,
    chart updates per minute, Stop latency.

:mod:`recon.bench.summary` turns the measurements into the headline table and the report. The
step-only seconds per iteration stay as a secondary column: the old benchmark timed steps alone,
and a 1.6 s step said nothing of a 6.5-minute command.
"""
