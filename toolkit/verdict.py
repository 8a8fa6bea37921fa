"""The thresholds of the toolkit's convergence verdict (``toolkit.inference.diagnose``), in one place that
every module reading a verdict can import (the inference layer, the reviewer's tables, the reports).

A fit passes when every element's rank-normalised split R-hat is at most ``RHAT_MAX`` and its bulk and tail
effective sample sizes are at least ``ESS_MIN`` (Vehtari et al. 2021, Bayesian Analysis 16:667), every chain's
E-BFMI is at least ``BFMI_MIN``, and there are no divergences and few draws at the maximum tree depth.
"""

RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3
