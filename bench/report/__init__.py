"""The report: ``python -m bench.report --results DIR`` builds Table 1, Figure 7 and an index.

Modules, in the order the report runs them:

- ``selection``: the results directory's tidy table and which runs Table 1 and Fig. 7 use;
- ``table``: Table 1 (csv, markdown), the numbers under Fig. 7, the mechanism page;
- ``figures``: every PNG, drawn by ``bench.plots``;
- ``stats`` and ``verdicts``: ``verdicts.md`` / ``verdicts.csv``, each claim judged by one rule;
- ``index``: ``index.md``;
- ``headline``: the README's headline block (``--readme``);
- ``cli``: ``main`` and ``build_report`` (one set of pages per dataset).

The paper's numbers are data: ``paper_mnist.yaml``, loaded by ``paper``. Model rows and labels
come from the registry (``bench.registry``).
"""

from bench.report.cli import build_report, main
from bench.report.markdown import write_text
from bench.report.selection import load_table, read_json, select_runs
from bench.report.table import build_table1, mechanism_markdown, table1_markdown

__all__ = ["build_report", "build_table1", "load_table", "main", "mechanism_markdown", "read_json", "select_runs",
           "table1_markdown", "write_text"]
