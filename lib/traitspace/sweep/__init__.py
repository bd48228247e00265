"""``python -m traitspace sweep``: a grid of params overrides run through submitit.

Modules: ``spec`` (the sweep file and its grid of cells), ``submit`` (submitit executors, skipping
finished runs, waiting), ``results`` (the table and figure), ``command`` (the command line).
"""

from .spec import Cell, Sweep, load_sweep  # noqa: F401
from .submit import CellResult, is_finished, run_sweep  # noqa: F401
