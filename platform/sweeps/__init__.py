"""Ray Tune + Optuna sweeps: the search space, the study, the trial driver, the sweep driver and its report."""
