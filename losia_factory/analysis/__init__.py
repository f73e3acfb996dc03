"""What a LoSiA run did, as figures.

Subnet positions and frequencies, coverage, singular-vector similarity, learning rates and captured gradient mass.
The data modules compute, :mod:`.render` draws, :mod:`.report` ties them together.
"""

from .report import FIGURES, analyze
from .run import RunLog, load_run

__all__ = ["FIGURES", "RunLog", "analyze", "load_run"]
