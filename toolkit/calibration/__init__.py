"""Simulation-based calibration (SBC) of the toolkit's models, run on Dask.

- :mod:`toolkit.calibration.api`: ``calibrate(model, spec=..., simulations=..., out=...)``, what the
  ``toolkit calibrate`` command and notebooks call;
- :mod:`toolkit.calibration.generators`: each model's own generator (prior, likelihood at a design,
  test quantities); :mod:`toolkit.calibration.kinetics`: the CAR-T and joint models' generators;
- :mod:`toolkit.calibration.runner`: one simulation, a study on a local or existing Dask cluster, the
  resumable results store;
- :mod:`toolkit.calibration.metrics`: rank uniformity tests, simultaneous ECDF bands, coverage,
  contraction;
- :mod:`toolkit.calibration.plots`, :mod:`toolkit.calibration.report`: figures and the HTML summary;
- :mod:`toolkit.calibration.controls`: deliberately broken fits that the checks must flag;
- :mod:`toolkit.calibration.misspec`: the analysis fitted to trials from the trial simulator over a grid
  of effects (bias, RMSE, coverage, P(decision));
- :mod:`toolkit.calibration.worker`: Dask worker set-up (own compile caches, one thread).
"""
