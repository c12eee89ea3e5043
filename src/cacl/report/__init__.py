"""Pictures and pages about trained models: ranked results (``cacl visrank``) and the run report
(``cacl report``, also written by ``cacl train`` at the end of every run)."""

from cacl.report.html import REPORT_FILE, make_report, write_report_quietly
from cacl.report.visrank import Ranking, compute_ranking, write_visrank

__all__ = [
    "REPORT_FILE",
    "Ranking",
    "compute_ranking",
    "make_report",
    "write_report_quietly",
    "write_visrank",
]
