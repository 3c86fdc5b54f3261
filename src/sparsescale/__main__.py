"""``python -m sparsescale``, the form the workflow's jobs run.

After a normal return the process ends without the interpreter's teardown: with torch and
its compiler loaded, freeing every module takes about a second, a tenth of a small training
job (benchmarks/study_throughput.py, ``teardown_s``). Every output is written atomically and
closed before ``main`` returns, so only the streams and log handlers need flushing. Under a
profiler or tracer the normal exit is kept, so their reports are still written.
"""

import logging
import os
import sys

from sparsescale.cli import main

code = main()
if sys.getprofile() is not None or sys.gettrace() is not None:
    raise SystemExit(code)
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
