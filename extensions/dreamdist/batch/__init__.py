"""`dreamdist batch`: many 3D assets from one distribution, one threestudio run per seed.

threestudio is driven through its `launch.py` as subprocesses and never imported, so it can live in
its own environment. Modules, one job each:

  seeds     parse "0-199,300" and "0,1,2,3"
  manifest  manifest.jsonl, the append-only source of truth that makes re-runs resume
  jobs      the exact threestudio command lines, and running one seed (train, export, GLB)
  attempts  per-seed lock and state: which checkpoint an attempt wrote, resume or start clean
  process   child processes (whole trees) that die with the runner and stop cleanly on Ctrl-C
  backends  local GPU slots (a thread per slot) or an existing Ray cluster
  gallery   gallery.html in the output folder: a tile per seed (test renders, status, GLB, regenerate)
  runner    the loop: resume, queue, retries, progress bar, summary
"""
