

@pytest.mark.slow
def test_interim_brute_force_agrees(tmp_path):
    """The fast approximation against refits of the same imputed completed trials (one simulated 40-patient
    cohort in progress, 8 refits): the per-trial posterior probabilities agree closely, and so do most
    decisions. ``benchmarks/bench_design.py --interim K`` runs more cohorts and refits."""
    from toolkit.data import load_cohort
    from toolkit.design.interim import brute_force
    from toolkit.design.trials import write_interim_cohort

    d = load_design(PRIMARY)
    write_interim_cohort(d, tmp_path / "c", scenario="hypothesised", trial=0, patients=40)
    r = brute_force(load_cohort(tmp_path / "c"), d, imputations=8, seed=1, workdir=tmp_path / "bf",
                    overrides={"draws": 1000, "chains": 2, "tune": 500})
    diff = np.abs(np.array(r["q_approx"]) - np.array(r["q_refit"]))
    assert diff.mean() < 0.15, (r["q_approx"], r["q_refit"])
    assert r["agreement"] >= 0.75
