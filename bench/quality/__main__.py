"""`python -m bench.quality`: see bench/quality/run.py. The figures go to bench/results/quality.md too."""

from bench.quality.run import main
from bench.results import recorded

with recorded("quality"):
    main()
