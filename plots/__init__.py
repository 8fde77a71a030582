"""Figures and tables from results/<study> directories (reads CSV/JSON only)."""

import os

# The fits run tiny L-BFGS problems thousands of times; on a shared 2-core machine BLAS worker
# threads only wait on each other (30x slower measured with a study running). Set before numpy
# and scipy load their BLAS; an explicit setting in the environment wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
