"""The DuckDB baseline of `vigil bench --search`: the same SQL on the same
Parquet files, in the same run.

Reads a job as JSON on standard input:
  {"globs": ["<events>/org=7/date=*/*.parquet"], "from": RFC 3339, "to": RFC 3339,
   "runs": 20, "queries": [{"name": "...", "sql": "..."}]}
and prints JSON on standard output:
  {"version": "...", "threads": n,
   "results": [{"name": "...", "ms": [...], "rows": [[...], ...]}]}

`events` is a view over the files restricted to [from, to), as vigil's
search builds it; each query runs once untimed (as vigil's does), then
`runs` times timed. Like vigil, DuckDB lists the files again for every
query (a glob in the view).
"""

import json
import sys
import time

import duckdb


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def main():
    job = json.load(sys.stdin)
    con = duckdb.connect()
    globs = ", ".join(literal(g) for g in job["globs"])
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet([{globs}], hive_partitioning = false) "
        f"WHERE time >= TIMESTAMPTZ {literal(job['from'])} AND time < TIMESTAMPTZ {literal(job['to'])}"
    )
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    results = []
    for query in job["queries"]:
        rows = con.execute(query["sql"]).fetchall()
        ms = []
        for _ in range(job["runs"]):
            started = time.perf_counter()
            rows = con.execute(query["sql"]).fetchall()
            ms.append((time.perf_counter() - started) * 1000.0)
        results.append({"name": query["name"], "ms": ms, "rows": [[str(v) if v is not None else None for v in r] for r in rows]})
    json.dump({"version": duckdb.__version__, "threads": threads, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
