"""Benchmarks: `python -m bench.<name>` (speed, breakdown, device, timeline). Run warm, as the stages
are, where a warm server is listed (CLASSIC_CNNS_WARM, classic_cnns/warm.py)."""

import sys

if sys.argv[:1] == ["-m"]:  # `python -m bench.<name>`: a server with the frameworks loaded runs it, if there is one
    from classic_cnns import warm

    warm.run_warm_if_served([])
