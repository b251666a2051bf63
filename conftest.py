"""Test-session settings that must be in place before torch loads (here, and in the notebook kernels,
which inherit this environment).

On a machine where another program keeps a core busy, OpenMP threads that spin while they wait for
each other steal the time their partner needs: a quick stage-one step took 3.4x its idle time beside
one busy process, against 2.1x when the threads spin only briefly before sleeping (measured, 2 cores;
the results are the same, only the waiting changes). So CI keeps its speed on a busy machine.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")
