"""Interleaved benchmark rounds and the ratio table shared by bench/pmi.py,
bench/pmix.py and bench/python.py: every case runs once per round (a warm-up
round first), so a machine that slows down slows all cases alike; a failing
case is reported with its error instead of ending the benchmark."""
import statistics
import subprocess


def rounds(cases, runs, catch=(RuntimeError, OSError, subprocess.TimeoutExpired)):
    """Warm-up once, then `runs` interleaved rounds of `cases` (name -> callable
    returning a number); returns ({name: [values]}, {name: error}). A case
    raising one of `catch` is failed and not run again."""
    rows = {k: [] for k in cases}
    failed = {}
    for it in range(runs + 1):
        for name, f in cases.items():
            if name in failed:
                continue
            try:
                v = f()
            except catch as e:
                lines = str(e).strip().splitlines()
                errors = [l for l in lines if "error" in l.lower()]  # e.g. the CLI's line, not its "Run --help"
                failed[name] = (errors or lines)[-1][-200:] if lines else type(e).__name__
                continue
            if it > 0:
                rows[name].append(v)
    return rows, failed


def table(title, unit, rows, base_name, failed, vs="dragon", label="launcher"):
    """Median and min of each case, and its ratio to `base_name` (named `vs`)."""
    print(title)
    w = max([62] + [len(k) for k in rows])
    print(f"{label:{w}} {'median ' + unit:>11} {'min ' + unit:>9} {'vs ' + vs:>10}")
    base = statistics.median(rows[base_name]) if rows.get(base_name) and base_name not in failed else None
    for name, s in rows.items():
        if name in failed:
            print(f"{name:{w}} (failed: {failed[name]})")
            continue
        med = statistics.median(s)
        ratio = f"{med / base:9.2f}x" if base else f"{'-':>10}"
        print(f"{name:{w}} {med:11.3f} {min(s):9.3f} {ratio}")
