"""`cluster.results` is `cluster.study.results` under the name the README uses
(`cluster.results.load(study)`): the same module, not a copy."""

import sys

from cluster.study import results

sys.modules[__name__] = results
