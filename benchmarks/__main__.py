"""`python -m benchmarks`: the benchmark's entry point (see `benchmarks.run`)."""

import sys

from benchmarks.run import main

sys.exit(main())
