"""The event log: written by emit and work, read by tasks.

schema.py declares every event and its fields; format.py formats and parses one line;
log.py writes a command's lines (EventLog); stream.py sends them to `<queue>.events`;
fold.py turns events, one at a time, into what happened (the report and the dashboard).
"""
