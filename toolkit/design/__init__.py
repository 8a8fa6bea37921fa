"""Trial design and interim decisions.

Operating characteristics of pre-specified Bayesian decision rules
(simulated trials with looks in calendar time), predictive probability of
success for a trial in progress, predictive probability for a binary
response endpoint (Lee & Liu 2008), and the comparison of sampling
schedules for the kinetic models.
"""
