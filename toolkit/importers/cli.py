"""``toolkit import nonmem|adam|workbook ... --out COHORT``: the parser and the runner."""

from __future__ import annotations

import argparse

INFUSION_HELP = "exactly one of --infusion-date-column, --infusion-day-column, --infusion-study-day"


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is one."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def add_import_parser(sub, func) -> None:
    """Add the ``import`` subcommand (and its three sources) to the top-level subparsers."""
    fmt = _Defaults
    p = sub.add_parser("import", help="NONMEM/Monolix, CDISC ADaM or one-workbook data to a cohort folder")
    kinds = p.add_subparsers(dest="source", required=True)

    n = kinds.add_parser("nonmem", formatter_class=fmt,
                         help="NONMEM/Monolix-style long data (ID, TIME, DV, MDV, EVID, CMT, BLQ/CENS, LLOQ)")
    n.add_argument("file", help="the data file (.csv, .xlsx or .xpt)")
    n.add_argument("--out", required=True, help="cohort folder to write (new or empty)")
    n.add_argument("--dv-scale", required=True, choices=["linear", "log", "log10"],
                   help="scale of DV and LLOQ (log = natural log)")
    n.add_argument("--mrd-dv-scale", choices=["linear", "log", "log10"],
                   help="scale of the MRD records when it differs from --dv-scale")
    n.add_argument("--time-unit", required=True, choices=["hours", "days"], help="unit of TIME")
    n.add_argument("--cart-cmt", help="CMT value of the CAR-T level observations")
    n.add_argument("--mrd-cmt", help="CMT value of the MRD observations")
    n.add_argument("--cmt-column", default="CMT", help="column telling observations apart (e.g. DVID, YTYPE)")
    n.add_argument("--cart-unit", help="unit of the CAR-T levels, e.g. copies/ug")
    n.add_argument("--mrd-unit", default="pct", choices=["pct", "fraction"], help="MRD as %% or as a fraction")
    n.add_argument("--mrd-method", choices=["flow", "ngs", "qpcr"], help="MRD assay")
    n.add_argument("--mrd-specimen", choices=["BM", "PB"], help="MRD specimen")
    n.add_argument("--infusion-time", type=float,
                   help="the infusion on the TIME axis for every patient (default: each patient's EVID=1 record)")
    n.add_argument("--dose-cmt", help="CMT of the CAR-T dose record when a patient has several doses")
    n.add_argument("--arm-column", required=True, help="column holding the randomized arm")
    n.add_argument("--control-arm", required=True, metavar="CODE[=LABEL]", help="control arm code, e.g. 1=CAR-T")
    n.add_argument("--experimental-arm", required=True, metavar="CODE[=LABEL]",
                   help="experimental arm code, e.g. '2=IFN-a + CAR-T'")
    n.add_argument("--covariate", action="append", default=[], metavar="COLUMN[=name]",
                   help="baseline covariate column (repeatable), e.g. AGE=age_years, SEX=sex")
    n.add_argument("--sex-codes", help="codes of a SEX column, e.g. 1=M,2=F")
    n.add_argument("--outcomes", help="outcomes file: ID and the outcomes.csv columns, days since infusion (required)")
    n.add_argument("--study-name", help="study name for study.toml")
    n.add_argument("--key-file", help="where to write the private key ID -> patient code (default: OUT.id_key.csv)")
    n.set_defaults(func=func)

    a = kinds.add_parser("adam", formatter_class=fmt, help="CDISC ADaM datasets (CSV, .xlsx or SAS .xpt)")
    a.add_argument("--adsl", required=True, help="subject-level dataset")
    a.add_argument("--adtte", required=True, help="time-to-event dataset")
    a.add_argument("--adpc", help="dataset holding the CAR-T levels (or MRD)")
    a.add_argument("--adlb", help="dataset holding MRD (or the CAR-T levels)")
    a.add_argument("--adrs", help="response dataset (best overall response)")
    a.add_argument("--out", required=True, help="cohort folder to write (new or empty)")
    a.add_argument("--infusion-date-column", help="ADSL date variable of the CAR-T infusion; " + INFUSION_HELP)
    a.add_argument("--infusion-day-column", help="ADSL study-day variable of the CAR-T infusion")
    a.add_argument("--infusion-study-day", type=int, help="study day of the infusion for every subject (never 0)")
    a.add_argument("--arm-column", help="ADSL arm variable (default ARM, else TRT01P)")
    a.add_argument("--control-arm", required=True, metavar="VALUE[=LABEL]", help="control arm value in ADSL")
    a.add_argument("--experimental-arm", required=True, metavar="VALUE[=LABEL]", help="experimental arm value")
    a.add_argument("--population-flag", help="ADSL flag whose Y subjects are imported, e.g. SAFFL")
    a.add_argument("--covariate", action="append", default=[], metavar="VAR[=name]",
                   help="numeric ADSL covariate (repeatable); AGE and SEX are taken when present")
    a.add_argument("--os-param", default="OS", help="ADTTE PARAMCD of overall survival")
    a.add_argument("--relapse-param", default="RFS", help="ADTTE PARAMCD of relapse-free survival (from remission)")
    a.add_argument("--hsct-param", help="ADTTE PARAMCD of time to transplant")
    a.add_argument("--response", choices=["CR", "CRi"], help="response of every responder when there is no ADRS")
    a.add_argument("--response-param", default="BOR", help="ADRS PARAMCD of best overall response")
    a.add_argument("--relapse-cd19", default="unknown", choices=["positive", "negative", "unknown"],
                   help="CD19 status written for every relapse (ADaM holds none)")
    a.add_argument("--cart-param", help="PARAMCD of the CAR-T levels")
    a.add_argument("--cart-unit", help="unit of the CAR-T levels when AVALU does not give it")
    a.add_argument("--mrd-param", help="PARAMCD of MRD")
    a.add_argument("--mrd-unit", choices=["pct", "fraction"], help="MRD unit when AVALU does not give it")
    a.add_argument("--mrd-method", choices=["flow", "ngs", "qpcr"], help="MRD assay (else from LBMETHOD)")
    a.add_argument("--mrd-specimen", choices=["BM", "PB"], help="MRD specimen (else from LBSPEC)")
    a.add_argument("--study-name", help="study name for study.toml")
    a.add_argument("--key-file", help="where to write the private key USUBJID -> patient code "
                                      "(default: OUT.id_key.csv)")
    a.set_defaults(func=func)

    w = kinds.add_parser("workbook", help="one .xlsx with sheets patients, outcomes, cart_kinetics, mrd, study")
    w.add_argument("file", help="the workbook")
    w.add_argument("--out", required=True, help="cohort folder to write (new or empty)")
    w.set_defaults(func=func)


def run_import(args) -> object:
    """Run the importer ``args.source`` names; returns its ImportResult (raises ImportDataError)."""
    if args.source == "nonmem":
        from toolkit.importers.nonmem import import_nonmem

        return import_nonmem(
            args.file, out=args.out, dv_scale=args.dv_scale, mrd_dv_scale=args.mrd_dv_scale,
            time_unit=args.time_unit, arm_column=args.arm_column,
            control_arm=args.control_arm, experimental_arm=args.experimental_arm, outcomes=args.outcomes,
            cart_cmt=args.cart_cmt, mrd_cmt=args.mrd_cmt, cmt_column=args.cmt_column, cart_unit=args.cart_unit,
            mrd_unit=args.mrd_unit, mrd_method=args.mrd_method, mrd_specimen=args.mrd_specimen,
            infusion_time=args.infusion_time, dose_cmt=args.dose_cmt, covariates=args.covariate,
            sex_codes=args.sex_codes, study_name=args.study_name, key_file=args.key_file)
    if args.source == "adam":
        from toolkit.importers.adam import import_adam

        return import_adam(
            adsl=args.adsl, adtte=args.adtte, adpc=args.adpc, adlb=args.adlb, adrs=args.adrs, out=args.out,
            infusion_date_column=args.infusion_date_column, infusion_day_column=args.infusion_day_column,
            infusion_study_day=args.infusion_study_day, arm_column=args.arm_column, control_arm=args.control_arm,
            experimental_arm=args.experimental_arm, population_flag=args.population_flag,
            covariates=args.covariate, os_param=args.os_param, relapse_param=args.relapse_param,
            hsct_param=args.hsct_param, response=args.response, response_param=args.response_param,
            relapse_cd19=args.relapse_cd19, cart_param=args.cart_param, cart_unit=args.cart_unit,
            mrd_param=args.mrd_param, mrd_unit=args.mrd_unit, mrd_method=args.mrd_method,
            mrd_specimen=args.mrd_specimen, study_name=args.study_name, key_file=args.key_file)
    from toolkit.importers.workbook import import_workbook

    return import_workbook(args.file, out=args.out)
