"""The measurements behind ``benchmarks/perf_goals.py`` (issue 9's goal table).

- :mod:`perf.model`: a goal row, its samples, ratios and verdict, and the interleaved loop;
- :mod:`perf.refs`: the references (sqlite3 WAL, raw files, LMDB, sendfile / mmap slices);
- :mod:`perf.cases`: each row of the table as an engine run and a reference run;
- :mod:`perf.crash`: the SIGKILLed writer and the reopen timing of P9;
- :mod:`perf.report`: the rich table and the JSON document.

Engines are driven through the public API only (``mqstore.open``), so the figures are what
users get.
"""
