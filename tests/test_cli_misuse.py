"""Misused command lines: each exits 2 with a message naming the option and the fix.

No case samples: every misuse is caught before any work starts (the data are
checked before a fit, the options before the data). Run through
``toolkit.cli.main`` as a user would; nothing printed is a traceback and no
file is changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit.testing import EXAMPLE, copy_example, folder_digest, run_cli

SPECS = {
    "prior.toml": 'model = "durability"\n[priors]\nnonsense = [0, 1]\n',
    "sigma.toml": 'model = "durability"\n[priors]\nlog_hr = [0, -1]\n',
    "options_not_table.toml": 'model = "durability"\noptions = 3\n',
    "unknown_section.toml": 'model = "durability"\n[prior]\nlog_hr = [0, 1]\n',
    "unknown_sampler.toml": 'model = "durability"\n[sampler]\nwarmup = 10\n',
    "unknown_option.toml": 'model = "durability"\n[options]\nflavour = "cure"\n',
    "cart_priors.toml": 'model = "cart"\n[priors]\nlog_cmax = [0, 1]\n',
    "not_toml.toml": "model: durability\n",
    "latin1.toml": None,  # written as bytes below
    "bad_sampler_value.toml": 'model = "durability"\n[sampler]\nchains = 0\n',
    "primary_text.toml": 'model = "durability"\nprimary = "yes"\n',
    "bad_adaptation.toml": 'model = "cart"\n[sampler]\nadaptation = "dense"\n',
    "low_rank_pymc.toml": 'model = "durability"\n[sampler]\nbackend = "pymc"\nadaptation = "low_rank"\n',
}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with the files the misuse cases point at (read-only for the cases)."""
    root = tmp_path_factory.mktemp("misuse")
    (root / "a_file.txt").write_text("not a folder\n")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("user data\n")
    (root / "spec_folder").mkdir()
    for name, text in SPECS.items():
        if text is not None:
            (root / name).write_text(text)
    (root / "latin1.toml").write_bytes('model = "durability"\ntitle = "Étude"\n'.encode("latin-1"))
    copy_example(root / "cohort")
    return root


DATA = ["--data", "{cohort}", "--out", "{new}/run"]

# (id, argv with {place}, {cohort}, {new} placeholders, regex the output must match)
MISUSES = [
    ("no-command", [], r"the following arguments are required: command"),
    ("unknown-command", ["frobnicate"], r"invalid choice: 'frobnicate'"),
    ("validate-no-dir", ["validate"], r"the following arguments are required: dir"),
    ("validate-missing-dir", ["validate", "{place}/nope"], r"nope: is not a folder\. Fix: give the path of a cohort"),
    ("validate-a-file", ["validate", "{place}/a_file.txt"], r"a_file.txt: is not a folder"),
    ("validate-extra-argument", ["validate", "{cohort}", "more"], r"unrecognized arguments: more"),
    ("validate-unknown-option", ["validate", "{cohort}", "--fast"], r"unrecognized arguments: --fast"),
    ("describe-missing-dir", ["describe", "{place}/nope"], r"nope: is not a folder"),
    ("describe-no-dir", ["describe"], r"the following arguments are required: dir"),
    ("notebooks-no-dir", ["notebooks"], r"the following arguments are required: dir"),
    ("notebooks-into-a-full-folder", ["notebooks", "{place}/full"],
     r"notebooks .*full already exists and is not empty; give a new folder name"),
    ("notebooks-into-a-file", ["notebooks", "{place}/a_file.txt"], r"a_file.txt is an existing file"),
    ("run-notebooks-none-found", ["run-notebooks", "--data", "{cohort}", "--out", "{new}/nb", "--notebooks",
                                  "{place}/spec_folder"], r"no notebooks \(NN_name.ipynb\) found in .*spec_folder"),
    ("simulate-no-out", ["simulate"], r"the following arguments are required: --out"),
    ("simulate-0-patients", ["simulate", "--out", "{new}/t", "--patients", "0"],
     r"--patients must be from 2 \(one patient an arm\) to 100000, got 0"),
    ("simulate-1-patient", ["simulate", "--out", "{new}/t", "--patients", "1"], r"--patients must be from 2"),
    ("simulate-negative-patients", ["simulate", "--out", "{new}/t", "--patients", "-5"], r"got -5"),
    ("simulate-patients-text", ["simulate", "--out", "{new}/t", "--patients", "ten"],
     r"argument --patients: invalid int value: 'ten'"),
    ("simulate-patients-fraction", ["simulate", "--out", "{new}/t", "--patients", "2.5"],
     r"argument --patients: invalid int value: '2.5'"),
    ("simulate-seed-text", ["simulate", "--out", "{new}/t", "--seed", "abc"], r"argument --seed: expects a whole number from 0 to 4294967295, got .abc."),
    ("simulate-out-is-a-file", ["simulate", "--out", "{place}/a_file.txt"],
     r"--out .*a_file.txt is an existing file; give the name of a new folder"),
    ("simulate-out-not-empty", ["simulate", "--out", "{place}/full"],
     r"--out .*full already exists and is not empty; give a new folder name \(existing files are never overwritten\)"),
    ("simulate-out-under-a-file", ["simulate", "--out", "{place}/a_file.txt/trial"],
     r"a_file.txt is a file, not a folder"),
    ("simulate-out-is-a-cohort", ["simulate", "--out", "{cohort}"], r"already exists and is not empty"),
    ("effect-no-value", ["simulate", "--out", "{new}/t", "--effect", "cmax_gmr"],
     r"--effect expects NAME=VALUE with a finite number \(e.g. cmax_gmr=1.5\), got 'cmax_gmr'"),
    ("effect-no-name", ["simulate", "--out", "{new}/t", "--effect", "=2"], r"--effect expects NAME=VALUE.*got '=2'"),
    ("effect-text-value", ["simulate", "--out", "{new}/t", "--effect", "cmax_gmr=big"], r"got 'cmax_gmr=big'"),
    ("effect-nan", ["simulate", "--out", "{new}/t", "--effect", "cmax_gmr=nan"], r"got 'cmax_gmr=nan'"),
    ("effect-inf", ["simulate", "--out", "{new}/t", "--effect", "cmax_gmr=inf"], r"got 'cmax_gmr=inf'"),
    ("effect-unknown-name", ["simulate", "--out", "{new}/t", "--effect", "magic=2"],
     r"unknown effect\(s\) magic; valid names: "),
    ("effect-negative", ["simulate", "--out", "{new}/t", "--effect", "cmax_gmr=-1"],
     r"effect cmax_gmr must be a positive ratio, got -1.0"),
    ("effect-zero", ["simulate", "--out", "{new}/t", "--effect", "hazard_ratio_direct=0"],
     r"effect hazard_ratio_direct must be a positive ratio, got 0.0"),
    ("simulate-too-many-patients", ["simulate", "--out", "{new}/t", "--patients", "100000000"],
     r"--patients must be from 2 \(one patient an arm\) to 100000, got 100000000"),
    ("simulate-negative-seed", ["simulate", "--out", "{new}/t", "--seed=-1"],
     r"argument --seed: expects a whole number from 0 to 4294967295, got '-1'"),
    ("fit-seed-too-large", ["fit", "durability", *DATA, "--seed", "99999999999"],
     r"argument --seed: expects a whole number from 0 to 4294967295, got '99999999999'"),
    ("effect-absurd-ratio", ["simulate", "--out", "{new}/t", "--effect", "cmax_gmr=1e308"],
     r"--effect cmax_gmr=1e\+308: an effect is a ratio between 0.01 and 100 \(1 = no effect\)"),
    ("effect-tiny-ratio", ["simulate", "--out", "{new}/t", "--effect", "hazard_ratio_direct=1e-300"],
     r"--effect hazard_ratio_direct=1e-300: an effect is a ratio between 0.01 and 100"),
    ("fit-no-model", ["fit"], r"the following arguments are required: model"),
    ("fit-unknown-model", ["fit", "survival", *DATA], r"argument model: invalid choice: 'survival'"),
    ("fit-no-data", ["fit", "durability", "--out", "{new}/run"], r"the following arguments are required: --data"),
    ("fit-missing-data", ["fit", "durability", "--data", "{place}/nope", "--out", "{new}/run"], r"nope: is not a folder"),
    ("fit-draws-text", ["fit", "durability", *DATA, "--draws", "many"], r"argument --draws: invalid int value"),
    ("fit-backend", ["fit", "durability", *DATA, "--backend", "stan"], r"argument --backend: invalid choice: 'stan'"),
    ("fit-variant", ["fit", "durability", *DATA, "--variant", "lognormal"], r"argument --variant: invalid choice"),
    ("fit-chains-0", ["fit", "durability", *DATA, "--chains", "0"], r"chains must be >= 1, got 0"),
    ("fit-target-accept", ["fit", "durability", *DATA, "--target-accept", "1.5"],
     r"target_accept must be in \(0, 1\), got 1.5"),
    ("days-text", ["fit", "durability", *DATA, "--days", "abc"],
     r"--days expects a comma-separated list, each a whole number of days above 0 \(e.g. --days 180,365\); got 'abc'"),
    ("days-zero", ["fit", "durability", *DATA, "--days", "0,365"], r"--days expects .*; got '0,365'"),
    ("days-negative", ["fit", "durability", *DATA, "--days=-30"], r"--days expects .*; got '-30'"),
    ("days-fraction", ["fit", "durability", *DATA, "--days", "180.5"], r"--days expects .*; got '180.5'"),
    ("days-empty", ["fit", "durability", *DATA, "--days", ","], r"--days expects .*; got ','"),
    ("days-semicolons", ["fit", "durability", *DATA, "--days", "180;365"], r"--days expects .*; got '180;365'"),
    ("hr-below-zero", ["fit", "durability", *DATA, "--prob-hr-below", "0"],
     r"--prob-hr-below expects a comma-separated list, each a hazard ratio above 0"),
    ("hr-below-text", ["fit", "durability", *DATA, "--prob-hr-below", "one"], r"--prob-hr-below expects"),
    ("rfs-difference-2", ["fit", "durability", *DATA, "--prob-rfs-difference-above", "2"],
     r"--prob-rfs-difference-above expects a comma-separated list, each a difference between -1 and 1"),
    ("spec-folder", ["fit", "durability", *DATA, "--spec", "{place}/spec_folder"],
     r"spec_folder: is a folder; --spec expects a spec file such as models/durability_primary.toml"),
    ("spec-missing", ["fit", "durability", *DATA, "--spec", "{place}/nope.toml"], r"nope.toml: spec file not found"),
    ("spec-not-toml", ["fit", "durability", *DATA, "--spec", "{place}/not_toml.toml"], r"not_toml.toml: not valid TOML"),
    ("spec-latin1", ["fit", "durability", *DATA, "--spec", "{place}/latin1.toml"],
     r"latin1.toml: is not UTF-8 text; save it as UTF-8"),
    ("spec-wrong-model", ["fit", "cart", *DATA, "--spec", "models/durability_primary.toml"],
     r"is a spec for model 'durability', not 'cart'"),
    ("spec-unknown-prior", ["fit", "durability", *DATA, "--spec", "{place}/prior.toml"],
     r"prior.toml: \[priors\] unknown prior\(s\) nonsense; valid: "),
    ("spec-prior-sigma", ["fit", "durability", *DATA, "--spec", "{place}/sigma.toml"],
     r"sigma.toml: \[priors\] log_hr must be \[mu, sigma\] with sigma > 0, got \[0, -1\]"),
    ("spec-options-not-table", ["fit", "durability", *DATA, "--spec", "{place}/options_not_table.toml"],
     r"options_not_table.toml: options must be a \[options\] table"),
    ("spec-unknown-section", ["fit", "durability", *DATA, "--spec", "{place}/unknown_section.toml"],
     r"unknown_section.toml: unknown key\(s\) prior; valid: "),
    ("spec-unknown-sampler-key", ["fit", "durability", *DATA, "--spec", "{place}/unknown_sampler.toml"],
     r"unknown \[sampler\] key\(s\) warmup"),
    ("spec-unknown-option", ["fit", "durability", *DATA, "--spec", "{place}/unknown_option.toml"],
     r"unknown_option.toml: option\(s\) flavour are not options of model durability; valid: "),
    ("spec-priors-for-cart", ["fit", "cart", *DATA, "--spec", "{place}/cart_priors.toml"],
     r"cart_priors.toml: (\[priors\] )?unknown prior\(s\) log_cmax; valid: covariate_effect, "),
    ("spec-sampler-value", ["fit", "durability", *DATA, "--spec", "{place}/bad_sampler_value.toml"],
     r"chains must be >= 1, got 0"),
    ("spec-sampler-adaptation", ["fit", "cart", *DATA, "--spec", "{place}/bad_adaptation.toml"],
     r"unknown adaptation 'dense'; valid: diag, low_rank"),
    ("spec-low-rank-without-nutpie", ["fit", "durability", *DATA, "--spec", "{place}/low_rank_pymc.toml"],
     r"adaptation 'low_rank' needs backend 'nutpie'"),
    ("predict-no-patient-data", ["predict", "{place}/run"], r"the following arguments are required: --patient-data"),
    ("predict-horizons-text", ["predict", "{place}/run", "--patient-data", "{cohort}", "--horizons", "1y"],
     r"--horizons expects a comma-separated list, each a day above 0 \(e.g. --horizons 365,730\); got '1y'"),
    ("predict-horizons-negative", ["predict", "{place}/run", "--patient-data", "{cohort}", "--horizons=-5"],
     r"--horizons expects .*got '-5'"),
    ("predict-landmark-nan", ["predict", "{place}/run", "--patient-data", "{cohort}", "--landmark-day", "nan"],
     r"--landmark-day expects days since infusion between 0 and 7305, got nan"),
    ("predict-landmark-negative", ["predict", "{place}/run", "--patient-data", "{cohort}", "--landmark-day=-1"],
     r"--landmark-day expects days since infusion between 0 and 7305, got -1"),
    ("predict-landmark-text", ["predict", "{place}/run", "--patient-data", "{cohort}", "--landmark-day", "day90"],
     r"argument --landmark-day: invalid float value: 'day90'"),
    ("predict-out-existing-file", ["predict", "{place}/run", "--patient-data", "{cohort}", "--out",
                                   "{cohort}/patients.csv"],
     r"--out .*patients.csv already exists; give a new file name \(existing files are never overwritten\)"),
    ("predict-out-a-folder", ["predict", "{place}/run", "--patient-data", "{cohort}", "--out", "{place}/full"],
     r"--out .*full is a folder; give the name of a new file"),
    ("predict-out-missing-folder", ["predict", "{place}/run", "--patient-data", "{cohort}", "--out",
                                    "{place}/nope/p.csv"], r"--out .*p.csv: the folder .*nope does not exist"),
    ("compare-nothing", ["compare"], r"the following arguments are required: runs"),
    ("sensitivity-nothing", ["sensitivity"], r"the following arguments are required: run"),
    ("sensitivity-missing-run", ["sensitivity", "{place}/nope"], r"nope does not exist"),
    ("sensitivity-out-is-file", ["sensitivity", "{place}/nope", "--out", "{place}/a_file.txt"],
     r"--out .*a_file.txt is an existing file"),
    ("report-no-out", ["report", "{place}/run"], r"the following arguments are required: --out"),
    ("report-templates-missing", ["report", "{place}/run", "--out", "{new}/r.html", "--templates", "{place}/nope"],
     r"--templates .*nope: not a folder; give a folder holding copies of the report templates"),
    ("spec-primary-not-boolean", ["fit", "durability", *DATA, "--spec", "{place}/primary_text.toml"],
     r"primary_text.toml: primary must be true or false"),
    ("templates-over-a-cohort", ["templates", "--out", "{cohort}"],
     r"templates --out .*cohort holds patients.csv with data; choose a new folder \(templates never overwrite data\)"),
    ("templates-out-is-a-file", ["templates", "--out", "{place}/a_file.txt"],
     r"--out .*a_file.txt is an existing file; give the name of a new folder"),
    ("run-notebooks-missing-data", ["run-notebooks", "--data", "{place}/nope", "--out", "{new}/nb"],
     r"nope: is not a folder"),
    ("fit-cart-ignored-options", ["fit", "cart", *DATA, "--prior", "skeptical", "--days", "180"],
     r"fit cart does not use --days, --prior; the options of fit cart are --covariates, --effects-on"),
    ("fit-mrd-ignored-variant", ["fit", "mrd", *DATA, "--variant", "cure"], r"fit mrd does not use --variant"),
    ("fit-spec-and-no-spec", ["fit", "durability", *DATA, "--spec", "{place}/prior.toml", "--no-spec"],
     r"--spec and --no-spec exclude each other"),
    ("analyze-out-not-analysis", ["analyze", "{cohort}", "--out", "{place}/full"],
     r"--out .*full already exists and is not the output of `toolkit analyze`"),
    ("analyze-out-a-file", ["analyze", "{cohort}", "--out", "{place}/a_file.txt"],
     r"--out .*a_file.txt is an existing file"),
    ("analyze-out-in-cohort", ["analyze", "{cohort}", "--out", "{cohort}/analysis"],
     r"is inside the cohort folder"),
    ("analyze-sap-without-specs", ["analyze", "{cohort}", "--out", "{new}/a", "--sap", "{place}/spec_folder"],
     r"spec_folder: holds no analysis spec"),
    ("analyze-sap-missing", ["analyze", "{cohort}", "--out", "{new}/a", "--sap", "{place}/nope"],
     r"--sap .*nope: not a folder"),
    ("analyze-missing-data", ["analyze", "{place}/nope", "--out", "{new}/a"], r"nope: is not a folder"),
    ("design-no-trials", ["design", "models/design_primary.toml", "--out", "{new}/d"],
     r"the following arguments are required: --trials"),
    ("design-trials-0", ["design", "models/design_primary.toml", "--trials", "0", "--out", "{new}/d"],
     r"--trials must be a positive number of trials per scenario, got 0"),
    ("design-spec-missing", ["design", "{place}/nope.toml", "--trials", "2", "--out", "{new}/d"],
     r"nope.toml: design spec not found"),
    ("misspecify-trials-0", ["misspecify", "models/design_misspecification.toml", "--trials", "0", "--out", "{new}/m"],
     r"--trials must be a positive number of trials per scenario, got 0"),
    ("misspecify-spec-missing", ["misspecify", "{place}/nope.toml", "--trials", "2", "--out", "{new}/m"],
     r"nope.toml: design spec not found"),
    ("misspecify-analytic-rule", ["misspecify", "models/design_check_exponential.toml", "--trials", "2", "--out",
                                  "{new}/m"], r"a misspecification study fits a model"),
    ("interim-no-design", ["interim", "{cohort}", "--out", "{new}/i"], r"the following arguments are required: --design"),
    ("design-binary-more-responses", ["design-binary", "--responses", "9", "--patients", "5", "--max-patients", "40"],
     r"responses \(9\) cannot exceed the number of patients \(5\)"),
    ("design-binary-bad-prior", ["design-binary", "--responses", "2", "--patients", "5", "--max-patients", "40",
                                 "--prior-b", "-1"], r"prior parameter b must be a finite number above 0"),
    ("schedules-spec-is-a-folder", ["schedules", "{place}/spec_folder", "--cohorts", "2", "--out", "{new}/s"],
     r"spec_folder: is a folder; give a schedule spec"),
]


@pytest.mark.parametrize("id, argv, pattern", MISUSES, ids=[m[0] for m in MISUSES])
def test_misused_command_exits_2_with_a_clear_message(id, argv, pattern, place, tmp_path):
    values = {"place": place, "cohort": place / "cohort", "new": tmp_path}
    argv = [a.format(**values) for a in argv]
    before = folder_digest(place)
    code, output = run_cli(argv)
    assert code == 2, output
    assert re.search(pattern, output), output
    assert "Traceback" not in output
    assert folder_digest(place) == before, "a user file was changed"
    assert not any(Path(tmp_path).iterdir()), "nothing may be written on a misused command"


def test_misuse_list_is_long_and_unique():
    assert len(MISUSES) >= 50
    assert len({m[0] for m in MISUSES}) == len(MISUSES)


def test_help_exits_0():
    code, output = run_cli(["validate", "--help"])
    assert code == 0 and "usage: toolkit validate" in output


def test_a_bug_is_reported_without_a_traceback(monkeypatch, capsys):
    """The last guard: an unexpected exception is a bug (exit 1), never a traceback or the data."""
    import toolkit.cli as cli

    def broken(args):
        raise KeyError("P007 Jane Smith")

    monkeypatch.setattr(cli, "cmd_validate", broken)
    code, output = run_cli(["validate", str(EXAMPLE)])
    assert code == 1
    assert "internal error (KeyError) in 'toolkit validate': this is a bug in the toolkit" in output
    assert "Traceback" not in output and "Jane" not in output
    monkeypatch.setenv("TOOLKIT_DEBUG", "1")
    code, output = run_cli(["validate", str(EXAMPLE)])
    assert code == 1 and "Traceback" in output  # the details, only when asked for
