"""Reports of runs: `write_report(run_dir)` writes one self-contained HTML page of a run
directory (`page.py`); `plot_*` draw a mixing run's figures as PNG files (`plots.py`).

matplotlib (the `report` extra) is imported only when a figure is drawn.
"""

from assay.report.page import write_report
from assay.report.plots import plot_bimix_fits, plot_mixtures, plot_predicted_vs_measured

__all__ = ["plot_bimix_fits", "plot_mixtures", "plot_predicted_vs_measured", "write_report"]
