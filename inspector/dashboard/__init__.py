"""`tasks dashboard`: the run, its workers, its timeline and its queue, live in a browser.

state.py folds events (the dicts utils/eventlog/format.py's parse_line gives) into a bounded live view;
sources.py feeds it (today: the log files of this machine, tailed); server.py serves the page
(static/), /api/state and /metrics. docs/DASHBOARD.md describes the seam and the caps.
"""
